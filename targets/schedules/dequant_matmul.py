"""GPU schedule for the prefill matmul: y[1, T, N] = x[1, T, K] @ dequantize(q_weight, q_scale).T.

dlight's Matmul rule tiles it through shared memory and computes the dequantize block where it
loads the weight tile, so the float weight is never materialized. On CUDA with tensor cores
(sm_80, sm_90) the dequantized weight is made float16 first: dlight then takes its tensor-core
path (WMMA, fp16 x fp16 -> float32), which needs both operands in fp16. The weight is rounded to
fp16 once, (code - 7) * scale, as the q4f16 format defines it; the float32 form stays where there
are no tensor cores (SIMT: float32 FMAs).
"""

from __future__ import annotations

from tvm.s_tir.dlight.base import ScheduleRule

from . import q4_schedule


class DequantMatmul(ScheduleRule):
    def apply(self, func, target, tunable):
        from tvm.s_tir.dlight.gpu import Matmul

        q4 = q4_schedule(func)
        if q4 is None:
            return None
        sch, blocks = q4
        if has_tensor_cores(target):
            for block in blocks:
                sch.unsafe_set_dtype(block, 0, "float16")
            func = sch.mod["main"]
        return Matmul().apply(func, target, tunable)


def has_tensor_cores(target) -> bool:
    return target.kind.name == "cuda" and int(str(target.attrs.get("arch", "sm_0")).removeprefix("sm_")) >= 80
