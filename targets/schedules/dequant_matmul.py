"""GPU schedule for the prefill matmul: y[1, T, N] = x[1, T, K] @ dequantize(q_weight, q_scale).T.

dlight's Matmul rule tiles it through shared memory and computes the dequantize block where it
loads the weight tile, so the float weight is never materialized. On CUDA the rule is given the
target without its `arch`: with sm_80/sm_90 dlight takes its tensor-core path, which crashes the
process on this IR (platform-notes), so prefill runs on the SIMT path (fp32 FMAs, no tensor cores).
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from . import dequantize_blocks


class DequantMatmul(ScheduleRule):
    def apply(self, func, target, tunable):
        from tvm import s_tir
        from tvm.s_tir.dlight.gpu import Matmul

        if not isinstance(func, tirx.PrimFunc):
            return None
        if not dequantize_blocks(s_tir.Schedule(func)):
            return None
        return Matmul().apply(func, simt_target(target), tunable)


def simt_target(target: Target) -> Target:
    if target.kind.name != "cuda" or "arch" not in target.attrs:
        return target
    config = {k: v for k, v in target.export().items() if k not in ("arch", "host")}
    return Target(config, host=target.host)
