"""Decode and prefill speed of the Vulkan target on the GPU machine (NVIDIA's Vulkan driver, via wgpu).

    python benchmarks/vulkan_speed.py build .bench/vulkan     # here: libraries, a copy kernel, the plugin
    python benchmarks/vulkan_speed.py run .bench/vulkan       # GPU machine: TVM runtime + wgpu only

Llama-2-7B shape, q4f16_1, random weights generated on the device, for the presets `vulkan:nvidia`
(subgroup reductions) and `vulkan` (generic: workgroup-memory reductions). Decode tok/s at contexts
128 and 1024 (64 timed steps, logits copied to the host each step as a chat does), prefill tok/s for
512 tokens, and per decode step: kernels dispatched, queue submissions, and the host time not spent
waiting for the GPU. The bound is (weight +
KV bytes read per token) / the bandwidth of a WGSL copy kernel run through the same plugin in the
same run (torch's CUDA copy is printed beside it). The two presets' logits are compared on the same
weights, as a check of the subgroup kernels.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cuda_speed import PREFILL, STEPS, compile_from_config, kv_bytes_per_token  # noqa: E402

PRESETS = ("vulkan:nvidia", "vulkan")
MODEL = "llama2-7b"
CONTEXTS = (128, 1024)
CONTEXT_WINDOW = 2048
COPY_WORDS = 1 << 28  # 1 GiB of uint32


def copy_kernel(out: Path) -> None:
    """B = A over COPY_WORDS words, 4 words (128 bits) per thread."""
    import tvm
    from tvm.script import tirx as T

    from mlcgen.targets import vulkan

    @T.prim_func
    def copy(a: T.Buffer((COPY_WORDS // 4, 4), "uint32"), b: T.Buffer((COPY_WORDS // 4, 4), "uint32")):
        for bx in T.thread_binding(COPY_WORDS // 4 // 256, thread="blockIdx.x"):
            for tx in T.thread_binding(256, thread="threadIdx.x"):
                for v in T.vectorized(4):
                    b[bx * 256 + tx, v] = a[bx * 256 + tx, v]

    tvm.compile(tvm.IRModule({"copy": copy}), vulkan.tvm_target("generic")).export_library(str(out / "copy.so"))


def build(out: Path) -> None:
    from mlcgen.runtime import vulkan

    for target in PRESETS:
        compile_from_config(MODEL, "q4f16_1", target, out / target.replace(":", "-"), CONTEXT_WINDOW, PREFILL)
    copy_kernel(out)
    plugins = out / "plugins"  # the GPU machine has no TVM headers to build it: carry this one
    plugins.mkdir(exist_ok=True)
    shutil.copy2(vulkan.build_plugin(), plugins / vulkan.plugin_path().name)


# ---------------------------------------------------------------- GPU machine


def vulkan_copy_gbs(out: Path) -> float:
    import tvm

    dev = tvm.device("webgpu", 0)
    lib = tvm.runtime.load_module(str(out / "copy.so"))
    a = tvm.runtime.empty((COPY_WORDS // 4, 4), "uint32", dev)
    b = tvm.runtime.empty((COPY_WORDS // 4, 4), "uint32", dev)
    lib["copy"](a, b)
    dev.sync()
    reps = 20
    start = time.perf_counter()
    for _ in range(reps):
        lib["copy"](a, b)
    dev.sync()
    return 2 * COPY_WORDS * 4 * reps / (time.perf_counter() - start) / 1e9


def measure(dist_dir: Path, bandwidth: float) -> tuple[dict, np.ndarray]:
    from mlcgen.runtime import dist, vulkan
    from mlcgen.runtime.engine import Engine

    start = time.perf_counter()
    engine = Engine(dist_dir, random_weights=True)
    result = {"load_s": time.perf_counter() - start, "decode": {}, "bound": {}}
    manifest = engine.manifest
    ids = np.random.default_rng(0).integers(3, manifest["model"]["config"]["vocab_size"], size=CONTEXT_WINDOW)
    check_logits = engine.prefill(ids[:32])
    token = [1]

    def step():
        token[0] = int(engine.decode(token[0]).argmax())

    weights = dist.params_bytes(manifest)
    for context in CONTEXTS:
        engine.reset()
        engine.prefill(ids[: context - STEPS - 8])
        for _ in range(8):
            step()
        before = vulkan.counters()
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        result["decode"][context] = STEPS / (time.perf_counter() - start)
        after = vulkan.counters()
        result["dispatches_per_step"] = (after["dispatches"] - before["dispatches"]) / STEPS
        result["submissions_per_step"] = (after["submissions"] - before["submissions"]) / STEPS
        # host time not spent waiting for the GPU: recording, validation, Python, the VM
        result["host_ms_per_step"] = 1e3 / result["decode"][context] - (after["wait_ns"] - before["wait_ns"]) / 1e6 / STEPS
        result["bound"][context] = bandwidth * 1e9 / (weights + kv_bytes_per_token(manifest["model"]["config"], context))
    prefill = []
    for _ in range(3):
        engine.reset()
        start = time.perf_counter()
        engine.prefill(ids[:PREFILL])
        prefill.append(PREFILL / (time.perf_counter() - start))
    result["prefill"] = max(prefill)
    result["device_bytes_peak"] = vulkan.counters()["peak_bytes"]
    result["params_bytes"], result["kv_cache_bytes"] = weights, dist.kv_cache_bytes(manifest)
    del engine
    return result, check_logits


def torch_copy_gbs() -> float | None:
    try:
        from cuda_speed import copy_gbs

        return copy_gbs()
    except Exception as e:  # no torch / no CUDA: the Vulkan figure stands alone
        print(f"torch copy not measured: {e}")
        return None


def run(out: Path) -> None:
    from mlcgen.runtime import vulkan

    vulkan.CACHE = Path(os.environ.get("MLCGEN_PLUGIN_CACHE", out / "plugins"))  # the plugin build() carried
    facts = vulkan.adapter()
    results = {"adapter": facts, "vulkan_copy_gbs": vulkan_copy_gbs(out), "torch_copy_gbs": torch_copy_gbs(), "presets": {}}
    logits = {}
    for target in PRESETS:
        results["presets"][target], logits[target] = measure(out / target.replace(":", "-"), results["vulkan_copy_gbs"])
    a, b = logits[PRESETS[0]], logits[PRESETS[1]]
    results["preset_logit_rel_err"] = float(np.abs(a - b).max() / np.abs(b).max())
    results["preset_same_top1"] = bool(a.argmax() == b.argmax())
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report(results)


def report(r: dict) -> None:
    f = r["adapter"]
    print(f"adapter: {f['name']} ({f['backend']}), {f['device_local_heap_bytes'] / 2**30:.0f} GiB device-local, "
          f"subgroups {f['subgroup_size']}, max storage binding {f['max_storage_buffer_binding_size'] / 2**20:.0f} MiB")
    torch_copy = f", torch CUDA copy {r['torch_copy_gbs']:.0f} GB/s" if r["torch_copy_gbs"] else ""
    print(f"copy bandwidth: WGSL kernel through the plugin {r['vulkan_copy_gbs']:.0f} GB/s{torch_copy}")
    print(f"\nLlama-2-7B shape, q4f16_1 | " + " | ".join(f"decode ctx {c}" for c in CONTEXTS) + " | prefill 512 | dispatches, submissions, host ms per step")
    for target, m in r["presets"].items():
        cells = [f"{m['decode'][c]:.1f} tok/s ({m['decode'][c] / m['bound'][c]:.0%} of {m['bound'][c]:.0f})" for c in CONTEXTS]
        print(f"{target} | " + " | ".join(cells) + f" | {m['prefill']:.0f} tok/s | {m['dispatches_per_step']:.0f}, {m['submissions_per_step']:.1f}, {m['host_ms_per_step']:.1f}")
    print(f"\nvulkan:nvidia vs vulkan logits (same weights, 32-token prefill): rel. error {r['preset_logit_rel_err']:.2e}, "
          f"same top-1: {r['preset_same_top1']}")
    for target, m in r["presets"].items():
        print(f"{target}: device memory peak {m['device_bytes_peak'] / 2**20:.0f} MiB for params {m['params_bytes'] / 2**20:.0f} "
              f"+ KV {m['kv_cache_bytes'] / 2**20:.0f} MiB; load + random weights {m['load_s']:.0f} s")


if __name__ == "__main__":
    {"build": build, "run": run}[sys.argv[1]](Path(sys.argv[2]))
