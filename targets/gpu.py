"""Schedules shared by the GPU targets: TVM's dlight rules, tried in order on every PrimFunc.

GEMV takes the decode matmuls (batch 1, dequantize inside the reduction); Reduction and
GeneralReduction take norms and the fused add+RMSNorm (dlight's RMSNorm rule expects its own
block layout and fails on the fused kernel); Fallback gives everything else a thread binding.
The paged-attention kernels arrive scheduled from TVM's KV cache.
"""

from __future__ import annotations


def schedule_passes(target) -> list:
    from tvm.s_tir import dlight as dl

    return [dl.ApplyDefaultSchedule(dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback())]
