"""Schedules shared by the GPU targets, applied to every PrimFunc in two rounds.

First ours: AddRMSNorm takes the fused residual-add + RMSNorm, DequantGEMV the decode matmuls
(batch 1, q4 dequantize inside the reduction) with the target preset's knobs, MfmaDequantMatmul the
prefill matmuls on AMD matrix cores where the preset has them, else DequantMatmul (dlight's
Matmul, dequantizing into shared memory). Then the dequantize of any q4
matmul left over is inlined, and TVM's dlight rules take the rest: GEMV for matrix-vector kernels
on float weights, LowBatchGEMV, Reduction and GeneralReduction for the plain norms, Fallback
gives everything else a thread binding. The paged-attention kernels arrive scheduled from TVM's KV cache.
"""

from __future__ import annotations

from .schedules.dequant_gemv import GemvKnobs


def schedule_passes(target, gemv: GemvKnobs, matrix_cores: bool = False) -> list:
    from tvm.s_tir import dlight as dl

    from ..compiler.passes import inline_dequantize
    from .schedules.add_rms_norm import AddRMSNorm
    from .schedules.dequant_gemv import DequantGEMV
    from .schedules.dequant_matmul import DequantMatmul

    prefill = [DequantMatmul()]
    if matrix_cores:  # imported only here: TVM's tensor_intrin package parses every target's intrinsics
        from .schedules.mfma_matmul import MfmaDequantMatmul

        prefill.insert(0, MfmaDequantMatmul())
    return [
        dl.ApplyDefaultSchedule(AddRMSNorm(), DequantGEMV(gemv), *prefill),
        inline_dequantize,
        dl.ApplyDefaultSchedule(dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                dl.gpu.Fallback()),
    ]
