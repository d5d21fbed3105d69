"""Is the CUDA decode GEMV bound by instruction issue? Static analysis of its SASS (no GPU needed):
the instructions one thread issues for its weights, per weight, and the share of an H200's issue
rate that streaming weights at its copy speed would take (docs/benchmarks.md, session 18).

    pip install nvidia-cuda-nvdisasm      # the disassembler; nvcc comes with the CUDA toolkit
    python benchmarks/cuda_gemv_sass.py   # here: compiles the sm_90 preset's GEMV at 7B shapes

Only shapes whose row a lane covers in one unrolled step are counted (K = 4096: straight-line code,
so the static count is what a thread issues, NOPs left out); the script checks that no branch
goes backwards.
Issue rate: 132 SMs x 4 warp schedulers x 1.98 GHz x 32 lanes; weights at copy speed: the
4224 GB/s a device copy reached in session 18 at 0.5625 bytes a weight (with its fp16 scale).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tvm
from gemv_efficiency import SHAPES, gemv_func
from tvm.s_tir import dlight as dl

from mlcgen.targets import cuda
from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

ARCH = "sm_90"
ISSUE_PER_SECOND = 132 * 4 * 1.98e9 * 32  # lane instructions an H200 issues a second
WEIGHTS_PER_SECOND = 4224e9 / (0.5 + 2 / 32)  # q4 weights a second at the copy's bandwidth
STRAIGHT = ("qkv", "o", "gate_up", "lm_head")  # K = 4096: one unrolled step a lane


def nvdisasm() -> str:
    """nvdisasm on PATH, else the one of the `nvidia-cuda-nvdisasm` wheel."""
    found = shutil.which("nvdisasm")
    if found is None:
        try:
            import nvidia
        except ImportError:
            nvidia = None
        roots = nvidia.__path__ if nvidia else []
        found = next((str(p) for root in roots for p in Path(root).glob("cu*/bin/nvdisasm")), None)
    if found is None:
        sys.exit("no nvdisasm: pip install nvidia-cuda-nvdisasm")
    return found


def kernel_source(n: int, k: int) -> str:
    target = cuda.tvm_target(ARCH)
    with target:
        mod = dl.ApplyDefaultSchedule(DequantGEMV(cuda.PRESETS[ARCH].gemv))(tvm.IRModule({"main": gemv_func(n, k, "float32")}))
    return tvm.compile(mod, target).mod.imports[0].inspect_source()


def sass(source: str, work: Path, disassembler: str) -> tuple[int, int]:
    """The kernel's instructions up to its last EXIT (NOPs left out), and its registers (ptxas -v)."""
    (work / "gemv.cu").write_text(source)
    built = subprocess.run(["nvcc", "--cubin", "-O3", f"-arch={ARCH}", "-Xptxas", "-v", "-o", str(work / "gemv.cubin"),
                            str(work / "gemv.cu")], capture_output=True, text=True, check=True)
    registers = int(re.search(r"Used (\d+) registers", built.stderr).group(1))
    text = subprocess.run([disassembler, "-c", str(work / "gemv.cubin")], capture_output=True, text=True, check=True).stdout
    labels, lines = {}, []  # label -> address of the instruction after it; (address, instruction)
    for line in text.splitlines():
        if label := re.match(r"(\.L_x_\d+):", line):
            labels[label.group(1)] = None
        elif instruction := re.search(r"/\*([0-9a-f]{4,})\*/\s+([^;]+);", line):
            address = int(instruction.group(1), 16)
            labels.update({name: address for name, at in labels.items() if at is None})
            lines.append((address, instruction.group(2).strip()))
    last_exit = max(i for i, (_, code) in enumerate(lines) if re.search(r"\bEXIT\b", code))
    body = lines[:last_exit + 1]
    for address, code in body:
        target = re.search(r"BRA\s+`\((\.L_x_\d+)\)", code)
        if target and labels[target.group(1)] <= address:
            raise RuntimeError("a backward branch: the static count is not what a thread issues")
    return sum("NOP" not in code for _, code in body), registers


def main() -> None:
    knobs = cuda.PRESETS[ARCH].gemv
    disassembler = nvdisasm()
    print(f"sm_90 preset decode GEMV: SASS instructions a thread issues ({knobs.rows_per_thread} rows x the K / "
          f"{knobs.threads_per_row} weights of each)\n")
    print(f"{'shape':8} {'N x K':>12} {'registers':>9} {'instructions':>12} {'per weight':>10} {'issue share at copy speed':>26}")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in STRAIGHT:
            n, k = SHAPES[shape]
            instructions, registers = sass(kernel_source(n, k), Path(tmp), disassembler)
            per_weight = instructions / (knobs.rows_per_thread * k / knobs.threads_per_row)
            share = per_weight * WEIGHTS_PER_SECOND / ISSUE_PER_SECOND
            print(f"{shape:8} {f'{n} x {k}':>12} {registers:>9} {instructions:>12} {per_weight:>10.2f} {share:>26.0%}")


if __name__ == "__main__":
    main()
