"""Experiment: does prefetching the next decode matmul's weights into L2 pay?

A decode step keeps HBM busy only while its GEMVs run (at ~0.6 of copy bandwidth); during the
attention, norm and RoPE kernels and the launch gaps between them it idles. Here 32 layers of the
four 7B layer matmuls (distinct weights: nothing in L2 from before) run with delay kernels standing
in for the rest of the layer, once plain and once with a kernel that prefetches the next matmul's
weights into L2 launched right after each matmul (one prefetch per 128-byte line, or bulk
prefetches of 4 KiB). It compares the matmuls' kernel durations (CUPTI): the step's wall time is
not a figure here, as the helper kernels are launched from Python (CuPy), tens of us each, so the
prefetches have finished before their matmul starts: the durations show what a matmul gains with
its weights in L2 at best.

    python benchmarks/l2_prefetch.py build .bench/l2     # here
    python benchmarks/l2_prefetch.py run .bench/l2       # GPU machine (CuPy for the helper kernels)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SHAPES = {"qkv": (12288, 4096), "o": (4096, 4096), "gate_up": (22016, 4096), "down": (4096, 11008)}
# us of other work after each matmul in a 7B decode step at context 128 (docs/benchmarks.md:
# RoPE, append, attention and the idle between them after q/k/v; add+RMSNorm after o and down).
GAPS = {"qkv": 12.0, "o": 3.5, "gate_up": 0.0, "down": 3.5}
LAYERS = 32

HELPERS = r"""
extern "C" __global__ void prefetch_lines(const char* p, unsigned long long n) {
  unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x * 128ULL;
  for (unsigned long long i = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) * 128ULL; i < n; i += stride)
    asm volatile("prefetch.global.L2 [%0];" :: "l"(p + i));
}
extern "C" __global__ void prefetch_bulk(const char* p, unsigned long long n) {
  const unsigned chunk = 4096;
  unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x * chunk;
  for (unsigned long long i = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) * chunk; i < n; i += stride) {
    unsigned size = (unsigned)(n - i < chunk ? n - i : chunk);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(p + i), "r"(size) : "memory");
  }
}
extern "C" __global__ void delay(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}
"""


def build(out: Path) -> None:
    import tvm
    from tvm.s_tir import dlight as dl

    from gemv_efficiency import gemv_func
    from mlcgen.targets import cuda
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    target = cuda.tvm_target("sm_90")
    out.mkdir(parents=True, exist_ok=True)
    for shape, (n, k) in SHAPES.items():
        with target:
            mod = dl.ApplyDefaultSchedule(DequantGEMV(cuda.PRESETS["sm_90"].gemv))(tvm.IRModule({"main": gemv_func(n, k, "float32")}))
        tvm.compile(mod, target).export_library(str(out / f"{shape}.so"))
    print(f"built {len(SHAPES)} libraries into {out}")


def run(out: Path) -> None:
    import cupy
    import torch
    import tvm
    from torch.profiler import ProfilerActivity, profile

    from mlcgen.compiler.quantization import get_quantization
    from mlcgen.runtime import cuda as cuda_runtime

    cuda_runtime.enable()
    dev = tvm.cuda(0)
    helpers = cupy.RawModule(code=HELPERS, options=("-arch=sm_90",))
    kernels = {name: helpers.get_function(name) for name in ("prefetch_lines", "prefetch_bulk", "delay")}
    q4 = get_quantization("q4f16_1")
    rng = np.random.default_rng(0)
    libs = {s: tvm.runtime.load_module(str(out / f"{s}.so"))["main"] for s in SHAPES}
    layers = [{} for _ in range(LAYERS)]  # per layer, per shape: (x, q_weight, q_scale, y, [(pointer, bytes)])
    for shape, (n, k) in SHAPES.items():
        qw, qs = q4.pack(rng.standard_normal((n, k), dtype=np.float32) * 0.02)
        x = tvm.runtime.tensor(rng.standard_normal((1, 1, k)).astype(np.float16), dev)
        y = tvm.runtime.empty((1, 1, n), "float16", dev)
        for layer in layers:
            w, s = tvm.runtime.tensor(qw, dev), tvm.runtime.tensor(qs, dev)
            layer[shape] = (x, w, s, y, [(w.data_ptr(), qw.nbytes), (s.data_ptr(), qs.nbytes)])
    order = [(layer, shape) for layer in range(LAYERS) for shape in SHAPES]

    def step(prefetch: str | None) -> None:
        for i, (layer, shape) in enumerate(order):
            x, w, s, y, _ = layers[layer][shape]
            libs[shape](x, w, s, y)
            if prefetch and i + 1 < len(order):
                for ptr, nbytes in layers[order[i + 1][0]][order[i + 1][1]][4]:
                    kernels[prefetch]((264,), (256,), (cupy.uint64(ptr), cupy.uint64(nbytes)))
            if GAPS[shape]:
                kernels["delay"]((1,), (1,), (cupy.uint64(int(GAPS[shape] * 1000)),))

    results = {}
    for variant in (None, "prefetch_lines", "prefetch_bulk", None):
        step(variant)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step(variant)
            torch.cuda.synchronize()
        per = {}
        device = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
        gemvs = [e for e in device if "delay" not in e.name and "prefetch" not in e.name]
        for i, e in enumerate(gemvs):  # the four libraries' kernels share a name: in step order
            per.setdefault(list(SHAPES)[i % len(SHAPES)], []).append(e.device_time)
        for e in device:
            if "prefetch" in e.name:
                per.setdefault(e.name, []).append(e.device_time)
        gemv_us = {name: float(np.median(t)) for name, t in per.items() if name in SHAPES}
        label = variant or "plain"
        results.setdefault(label, []).append({"kernels_us": gemv_us,
                                              "prefetch_us": {n: float(np.median(t)) for n, t in per.items() if "prefetch" in n}})
        r = results[label][-1]
        print(f"{label:15} matmul kernels (median us over {LAYERS} layers): " + ", ".join(f"{n} {t:.1f}" for n, t in gemv_us.items()) +
              "".join(f"; prefetch kernel {t:.1f}" for t in r["prefetch_us"].values()), flush=True)
    (out / "result.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    {"build": build, "run": run}[sys.argv[1]](Path(sys.argv[2]))
