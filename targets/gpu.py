"""Schedules shared by the GPU targets, applied to every PrimFunc in two rounds.

First the KV cache's decode attention is replaced by our split-KV kernel (schedules/split_kv_decode.py),
and where the target asks for it, TVM's prefill attention is regenerated with more thread blocks
(schedules/prefill_attention.py).
Then our rules: AddRMSNorm takes the fused residual-add + RMSNorm, DequantGEMV the decode matmuls
(batch 1, q4 dequantize inside the reduction) with the target preset's knobs, the prefill matmuls
the target's matrix-core rule where it has one (MfmaDequantMatmul on AMD's CDNA, MmaDequantMatmul on
NVIDIA's tensor cores), else DequantMatmul (dlight's Matmul, dequantizing into shared memory). Then the dequantize of any q4
matmul left over is inlined, and TVM's dlight rules take the rest: GEMV for matrix-vector kernels
on float weights, LowBatchGEMV, Reduction and GeneralReduction for the plain norms, Fallback
gives everything else a thread binding. The other paged-attention kernels (prefill, merges) arrive
scheduled from TVM's KV cache.
"""

from __future__ import annotations

from .schedules.dequant_gemv import GemvKnobs
from .schedules.split_kv_decode import AttentionKnobs


def schedule_passes(target, gemv: GemvKnobs, attention: AttentionKnobs, matrix_core_rule=None,
                    prefill_blocks: int | None = None) -> list:
    """matrix_core_rule: makes the prefill matmuls' rule for the target's matrix cores; called
    only here, as its module imports TVM's tensor_intrin package (which parses every target's
    intrinsics)."""
    from tvm.s_tir import dlight as dl

    from ..compiler.passes import inline_dequantize
    from .schedules.add_rms_norm import AddRMSNorm
    from .schedules.dequant_gemv import DequantGEMV
    from .schedules.dequant_matmul import DequantMatmul
    from .schedules.prefill_attention import use_prefill_blocks
    from .schedules.split_kv_decode import use_split_kv_decode

    prefill = [DequantMatmul()]
    if matrix_core_rule:
        prefill.insert(0, matrix_core_rule())
    return [
        use_split_kv_decode(attention),
        use_prefill_blocks(prefill_blocks),
        dl.ApplyDefaultSchedule(AddRMSNorm(), DequantGEMV(gemv), *prefill),
        inline_dequantize,
        dl.ApplyDefaultSchedule(dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                dl.gpu.Fallback()),
    ]


def register_warp_buffer_pipeline(name: str) -> None:
    """Register, as TIR pipeline `name`, TVM's s_tir lowering with two changes for the matrix-core
    kernels' register ("warp") buffers (schedules/mfma_matmul.py, schedules/mma_matmul.py):
    - no TIR common-subexpression elimination: it hides the lane index in a temporary, and
      LowerWarpMemory then cannot find its coefficient (LLVM and nvcc eliminate the same
      expressions later);
    - LowerWarpMemory until no warp buffer is left: TVM 0.27's pass lowers only the first one of a
      statement sequence (it takes the rest as that buffer's body without visiting them); a kernel
      has several (operands, accumulator, the software pipeline's copies)."""
    import tvm
    import tvm_ffi
    from tvm.s_tir import pipeline

    def build():
        lower, host, device = pipeline.default_s_tir_pipeline()

        @tvm.transform.module_pass(opt_level=0)
        def lower_without_cse(mod, ctx):
            with tvm.transform.PassContext(config={**ctx.config, "tirx.disable_cse_tir": True}):
                return lower(mod)

        @tvm.transform.module_pass(opt_level=0)
        def lower_every_warp_buffer(mod, ctx):
            while True:
                lowered = tvm.tirx.transform.LowerWarpMemory()(mod)
                if tvm_ffi.structural_equal(lowered, mod):
                    return device()(mod)
                mod = lowered

        return lower_without_cse, host, lambda: lower_every_warp_buffer

    tvm.tirx.register_tir_pipeline(name, build)
