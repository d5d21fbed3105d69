"""CPU (llvm): the target of tests, CI and the zero-setup default.

Kernels are left unscheduled: TVM's llvm codegen gives correct, portable, single-threaded code,
which is what tests need; a fast CPU path is not a goal of this target.
"""

from __future__ import annotations

from contextlib import nullcontext

DEVICE = "cpu"  # the runtime device this target's libraries run on
# generic x86-64, no -mcpu: a library built here must load on any x86-64 machine (CI included).
PRESETS = {"generic": {"kind": "llvm"}}


def default_preset() -> tuple[str, str]:
    return "generic", "portable x86-64"


def tvm_target(preset: str):
    from tvm.target import Target

    return Target(PRESETS[preset])


QUANTIZATIONS = ("q0f32", "q0f16", "q4f16_1", "q4f32_1")  # float32 activations are the fast ones on x86
QUANTIZATION_NOTE = ""
TIR_PIPELINE = "default"


def graph_passes(target, int8_activations: bool = False) -> list:
    return []


def schedule_passes(target) -> list:
    from ..compiler.passes import inline_dequantize

    return [inline_dequantize]  # no schedules: the q4 dequantize goes inside the matmul loops


def device_code():
    """The library holds all the code: no separate device code objects."""
    return nullcontext({})
