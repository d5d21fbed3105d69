"""Schedules shared by the GPU targets: TVM's dlight rules, tried in order on every PrimFunc.

AddRMSNorm (ours) takes the fused residual-add + RMSNorm; GEMV the decode matmuls (batch 1,
dequantize inside the reduction); Reduction and GeneralReduction the plain norms; Fallback gives
everything else a thread binding.
The paged-attention kernels arrive scheduled from TVM's KV cache.
"""

from __future__ import annotations


def schedule_passes(target) -> list:
    from tvm.s_tir import dlight as dl

    from .schedules.add_rms_norm import AddRMSNorm

    return [dl.ApplyDefaultSchedule(AddRMSNorm(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(),
                                    dl.gpu.GeneralReduction(), dl.gpu.Fallback())]
