"""Schedules shared by the GPU targets, applied to every PrimFunc in two rounds.

First the KV cache's decode attention is replaced by our split-KV kernel (schedules/split_kv_decode.py),
and where the target asks for it, TVM's prefill attention is regenerated with more thread blocks
(schedules/prefill_attention.py).
Then our rules: AddRMSNorm takes the fused residual-add + RMSNorm, DequantizeRows the fp16 weight
slices of a library prefill (CUDA's cuBLAS entry), DequantGEMV the decode matmuls
(batch 1, q4 dequantize inside the reduction) with the target preset's knobs, MfmaDequantMatmul the
prefill matmuls on AMD matrix cores where the preset has them, else DequantMatmul (dlight's
Matmul, dequantizing into shared memory). Then the dequantize of any q4
matmul left over is inlined, and TVM's dlight rules take the rest: GEMV for matrix-vector kernels
on float weights, LowBatchGEMV, Reduction and GeneralReduction for the plain norms, Fallback
gives everything else a thread binding. The other paged-attention kernels (prefill, merges) arrive
scheduled from TVM's KV cache.
"""

from __future__ import annotations

from .schedules.dequant_gemv import GemvKnobs
from .schedules.split_kv_decode import AttentionKnobs

# fp16 activations only: TVM 0.27's CUDA codegen writes float32x8 constants of its KV-cache kernels
# as make_ulonglong4 with eight arguments, which nvcc rejects (q0f32, q4f32_1).
QUANTIZATIONS = ("q4f16_1", "q0f16")
QUANTIZATION_NOTE = "GPU targets compute in fp16; TVM's float32 KV-cache kernels do not compile for CUDA"


def decode_passes(gemv: GemvKnobs, max_threads: int, int8_activations: bool) -> list:
    """The decode graph's rewrites for a preset: --int8-activations' (compiler/int8_activations.py:
    rows whose scale groups the GEMV's lanes tile, norms in at most max_threads threads), then, where
    the preset asks, the RMSNorms folded into the GEMVs around them (compiler/norm_fold.py), a slot
    being a GEMV block's rows, the activation normalized first where the GEMV stages it."""
    from ..compiler.int8_activations import use_int8_decode_activations
    from ..compiler.norm_fold import fold_rms_norms

    int8 = [use_int8_decode_activations(gemv.threads_per_row, max_threads)] if int8_activations else []
    return [*int8, *([fold_rms_norms(gemv.rows_per_block * gemv.rows_per_thread, gemv.stage_activation, gemv.fold_into_swiglu)]
                    if gemv.fold_rms_norm else [])]


def schedule_passes(target, gemv: GemvKnobs, attention: AttentionKnobs, matrix_cores: bool = False,
                    prefill_blocks: int | None = None, norm_threads: int = 256) -> list:
    from tvm.s_tir import dlight as dl

    from ..compiler.passes import check_thread_bindings, inline_dequantize
    from .schedules.add_rms_norm import AddRMSNorm
    from .schedules.dequant_gemv import DequantGEMV
    from .schedules.dequant_matmul import DequantMatmul
    from .schedules.dequantize_rows import DequantizeRows
    from .schedules.prefill_attention import use_prefill_blocks
    from .schedules.split_kv_decode import use_split_kv_decode

    prefill = [DequantMatmul()]
    if matrix_cores:  # imported only here: TVM's tensor_intrin package parses every target's intrinsics
        from .schedules.mfma_matmul import MfmaDequantMatmul

        prefill.insert(0, MfmaDequantMatmul())
    return [
        use_split_kv_decode(attention),
        use_prefill_blocks(prefill_blocks),
        dl.ApplyDefaultSchedule(AddRMSNorm(norm_threads), DequantizeRows(), DequantGEMV(gemv), *prefill),
        inline_dequantize,
        dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                dl.gpu.Fallback()),
        check_thread_bindings,
    ]
