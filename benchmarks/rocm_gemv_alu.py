"""Does the AMD decode GEMV have the ALU to keep up with its card's memory? Static analysis of the
code objects (no AMD GPU needed): the vector ALU instructions in the GEMV's loop body, per weight a
lane handles in it, float32 form vs the presets' packed fp16 form (targets/schedules/packed_dot.py)
vs the int8 form of `--int8-activations` (compiler/int8_activations.py), then the share of the
card's VALU issue rate that streaming weights at full bandwidth would take.

    python benchmarks/rocm_gemv_alu.py        # here: compiles 6 kernels, prints one table (docs/rocm.md)

VALU issue rate: one wave instruction per SIMD per (wave size / SIMD width) clocks, i.e. 64 lane
operations per CU per clock on both CDNA2 (4 x SIMD16, wave64) and RDNA3 (2 x SIMD32, wave32,
ignoring dual issue), at the preset's clock. Weights cost 0.5625 bytes each with their fp16
group scale. Above 100% the kernel is ALU-bound before it is memory-bound.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tvm
from gemv_efficiency import gemv_func
from tvm.s_tir import dlight as dl

from mlcgen.targets import amdgpu_inspect, rocm
from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

N = 4096
K = 16384  # several loop steps for every preset, so the step loop is a loop
BYTES_PER_WEIGHT = 0.5 + 2 / 32


def code_object(arch: str, knobs, path: Path, form: str) -> Path:
    target = rocm.tvm_target(arch)
    with target:
        mod = dl.ApplyDefaultSchedule(DequantGEMV(knobs))(tvm.IRModule({"main": gemv_func(N, K, "int8" if form == "int8" else "float32")}))
    with rocm.device_code() as objects:
        tvm.compile(mod, target)
    path.write_bytes(objects[rocm.CODE_OBJECT])
    return path


def loop_valu(path: Path, arch: str) -> int:
    """VALU operations between the kernel's backward branch and its target (the step loop)."""
    text = subprocess.run([amdgpu_inspect._llvm_tool("llvm-objdump"), "-d", f"--mcpu={arch}", str(path)],
                          capture_output=True, text=True, check=True).stdout
    start = int(re.search(r"^([0-9a-f]+) <main_kernel>:", text, re.M).group(1), 16)
    lines = [(int(m.group(2), 16), m.group(1), m.group(3)) for m in re.finditer(r"^\t(.*?)//\s*([0-9A-F]+):(.*)$", text, re.M)]
    for address, code, comment in lines:
        target = re.search(r"<main_kernel\+0x([0-9a-f]+)>", comment)
        if code.startswith("s_cbranch") and target and start + int(target.group(1), 16) < address:
            body = [c for a, c, _ in lines if start + int(target.group(1), 16) <= a <= address]
            return sum(len(re.findall(r"(?:^|:: )v_", c)) for c in body)
    raise RuntimeError(f"{path}: no loop found")


def main() -> None:
    print(f"decode GEMV {N} x {K}, VALU operations per weight in the step loop (one lane)\n")
    print(f"{'arch':8} {'form':8} {'lanes':>5} {'loop VALU':>9} {'weights':>7} {'VALU/weight':>11} {'VALU at full bandwidth':>23}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch, preset in rocm.PRESETS.items():
            for form, knobs in (("float32", dataclasses.replace(preset.gemv, packed_fp16=False)), ("packed", preset.gemv), ("int8", preset.gemv)):
                valu = loop_valu(code_object(arch, knobs, Path(tmp) / f"{arch}-{form}.hsaco", form), arch)
                weights = knobs.unroll * knobs.rows_per_thread * 8 * knobs.vector_words  # per lane per step
                per_weight = valu / weights
                rate = preset.compute_units * 64 * preset.clock_ghz * 1e9  # lane operations per second
                need = preset.bandwidth_gbs * 1e9 / BYTES_PER_WEIGHT * per_weight
                print(f"{arch:8} {form:8} {knobs.threads_per_row:>5} {valu:>9} {weights:>7} {per_weight:>11.2f} {need / rate:>22.0%}")


if __name__ == "__main__":
    sys.exit(main())
