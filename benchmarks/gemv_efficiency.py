"""Decode GEMV efficiency of the schedules the GPU targets use, measured on the GPU machine.

The q4f16_1 matmul kernel (dequantize inside the reduction) at Llama-2-7B decode shapes, scheduled
by TVM's dlight GEMV rule twice: under the gfx1100 preset (wave32, as the ROCm build schedules it)
and under a CUDA target. Both are compiled to CUDA (the same scheduled TIR: the closest runnable
variant of the AMD kernel here), checked against numpy, and timed; efficiency = achieved GB/s
over a device copy's GB/s measured in the same run.

    python benchmarks/gemv_efficiency.py build .bench/gemv            # here: compile (needs the TVM compiler)
    python benchmarks/gemv_efficiency.py run .bench/gemv              # GPU machine: TVM runtime + nvcc
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SHAPES = {"qkv": (12288, 4096), "o": (4096, 4096), "gate_up": (22016, 4096), "down": (4096, 11008)}
SCHEDULES = ("gfx1100", "cuda")


def build(out: Path) -> None:
    import tvm
    from tvm import te
    from tvm.s_tir import dlight as dl

    from mlcgen.compiler.quantization import get_quantization
    from mlcgen.targets import gpu, rocm

    q4 = get_quantization("q4f16_1")
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_90", "max_num_threads": 1024, "thread_warp_size": 32,
                              "max_shared_memory_per_block": 49152}, host={"kind": "llvm"})
    schedule_targets = {"gfx1100": rocm.tvm_target("gfx1100"), "cuda": cuda}
    out.mkdir(parents=True, exist_ok=True)
    for name, (n, k) in SHAPES.items():
        x = te.placeholder((1, 1, k), "float16", "x")
        w = te.placeholder((n, k // 8), "uint32", "w")
        s = te.placeholder((n, k // 32), "float16", "s")
        r = te.reduce_axis((0, k), "r")
        acc = te.compute((1, 1, n), lambda a, b, j: te.sum(x[a, b, r].astype("float32") * q4.dequantize(w, s, j, r).astype("float32"), axis=r), name="matmul")
        y = te.compute((1, 1, n), lambda *i: acc[i].astype("float16"), name="cast")
        func = te.create_prim_func([x, w, s, y])
        for schedule in SCHEDULES:
            with schedule_targets[schedule]:
                mod = gpu.schedule_passes(schedule_targets[schedule])[0](tvm.IRModule({"main": func}))
            tvm.compile(mod, cuda).export_library(str(out / f"{name}-{schedule}.so"))
    print(f"built {len(SHAPES) * len(SCHEDULES)} libraries into {out}")


def run(out: Path) -> None:
    import torch
    import tvm

    from mlcgen.compiler.quantization import get_quantization
    from mlcgen.runtime import cuda as cuda_runtime

    cuda_runtime.enable()
    dev = tvm.cuda(0)
    q4 = get_quantization("q4f16_1")
    big = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    copy = big.clone()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        copy.copy_(big)
    end.record()
    torch.cuda.synchronize()
    copy_gbs = 2 * big.numel() * 20 / (start.elapsed_time(end) / 1e3) / 1e9
    rng = np.random.default_rng(0)
    rows = []
    for name, (n, k) in SHAPES.items():
        w = (rng.standard_normal((n, k), dtype=np.float32) * 0.02)
        qw, qs = q4.pack(w)
        x = rng.standard_normal((1, 1, k), dtype=np.float32).astype(np.float16)
        ref = x.astype(np.float32)[0, 0] @ q4.unpack(qw, qs).T
        args = [tvm.runtime.tensor(a, dev) for a in (x, qw, qs)]
        nbytes = qw.nbytes + qs.nbytes + x.nbytes + n * 2
        for schedule in SCHEDULES:
            lib = tvm.runtime.load_module(str(out / f"{name}-{schedule}.so"))
            y = tvm.runtime.tensor(np.full((1, 1, n), np.nan, np.float16), dev)
            lib["main"](*args, y)
            err = float(np.linalg.norm(y.numpy().astype(np.float32)[0, 0] - ref) / np.linalg.norm(ref))
            seconds = lib.time_evaluator("main", dev, number=200, repeat=5)(*args, y).median
            rows.append({"shape": name, "n": n, "k": k, "schedule": schedule, "rel_err": err, "us": seconds * 1e6,
                         "gbs": nbytes / seconds / 1e9, "efficiency": nbytes / seconds / 1e9 / copy_gbs})
    result = {"device": torch.cuda.get_device_name(), "copy_gbs": copy_gbs, "rows": rows}
    print(json.dumps(result, indent=1))
    print(f"copy: {copy_gbs:.0f} GB/s")
    print(f"{'shape':8} {'schedule':8} {'us':>8} {'GB/s':>7} {'eff':>5} {'rel_err':>8}")
    for r in rows:
        print(f"{r['shape']:8} {r['schedule']:8} {r['us']:8.1f} {r['gbs']:7.0f} {r['efficiency']:5.2f} {r['rel_err']:8.1e}")


if __name__ == "__main__":
    {"build": build, "run": run}[sys.argv[1]](Path(sys.argv[2]))
