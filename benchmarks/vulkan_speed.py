"""Decode and prefill speed of the Vulkan target on the GPU machine (NVIDIA's Vulkan driver, via wgpu).

    python benchmarks/vulkan_speed.py build .bench/vulkan     # here: libraries, a copy kernel, the plugin
    python benchmarks/vulkan_speed.py build .bench/int8 --int8-activations   # the libraries with that build option
    python benchmarks/vulkan_speed.py build .bench/v --gemv fold_into_swiglu=False   # a preset GEMV knob changed (or --attention KNOB=VALUE)
    python benchmarks/vulkan_speed.py build .bench/v7 --config "llama2-7b vulkan:nvidia"   # that configuration only (repeatable), no GEMV sweep
    python benchmarks/vulkan_speed.py run .bench/vulkan       # GPU machine: TVM runtime + wgpu only
    python benchmarks/vulkan_speed.py run .bench/vulkan "llama2-7b vulkan:nvidia"   # those configurations only, no GEMV sweep

Llama-2-7B shape, q4f16_1, random weights generated on the device, for the presets `vulkan:nvidia`
(subgroup reductions) and `vulkan` (generic: workgroup-memory reductions), each without (the
default) and with the bounds checks wgpu's shader compiler can add to every buffer access
(MLCGEN_WGPU_BOUNDS_CHECKS=1); and the Llama-3-8B shape, whose embedding and lm_head run as row
chunks.
Each configuration runs in its own process: decode tok/s at contexts 128 and 1024 (64 timed greedy
steps as `Engine.decode_greedy` runs them: the argmax on the device, the host a step ahead; at 128
also sampled as a chat samples by default: top-p drawn on the device, Engine.sample_stream),
prefill tok/s for 512 tokens, per decode step
the kernels dispatched, queue submissions and host time not spent waiting for the GPU, and a
per-kernel profile of decode at context 128 (GPU timestamps). The bound is (weight + KV bytes read
per token) / the bandwidth of the faster of two WGSL copies in the same run: TVM's copy kernel
through the plugin (it stores element by element) and a hand-written one with 16-byte stores run
by wgpu-py (benchmarks/wgsl_gemv.py; torch's CUDA copy is printed beside them). All
configurations' logits are compared on the same weights. A sweep of decode-GEMV schedule knobs at the 7B layer shapes closes the run; the GPU
time per dispatch of a trivial kernel (with and without a dependency on the one before) opens it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cuda_speed import PREFILL, STEPS, build_options, compile_from_config, kernel_rows, kv_bytes_per_token, print_kernel_rows  # noqa: E402
from gemv_efficiency import gemv_func, weight_copies  # noqa: E402

PRESETS = ("vulkan:nvidia", "vulkan")
# label: (model shape, preset, bounds checks). Llama-3-8B's embedding and lm_head (250 MiB each)
# run as row chunks, as every Vulkan build stores them.
CONFIGS = {**{f"llama2-7b {p}{' checked' if checks else ''}": ("llama2-7b", p, checks) for p in PRESETS for checks in (False, True)},
           "llama3-8b vulkan:nvidia": ("llama3-8b", "vulkan:nvidia", False)}
CONTEXTS = (128, 1024)
CONTEXT_WINDOW = 2048
COPY_WORDS = 1 << 28  # 1 GiB of uint32
GEMV_SHAPES = {"qkv": (12288, 4096), "o": (4096, 4096), "gate_up": (22016, 4096), "down": (4096, 11008)}
GEMV_SWEEP = [(32, 4, 4, 1, 2), (32, 4, 4, 2, 2), (32, 8, 4, 1, 2), (32, 4, 4, 1, 4), (16, 4, 4, 1, 2), (16, 8, 4, 2, 2),
              (8, 4, 4, 2, 2), (8, 4, 4, 4, 2)]  # (threads_per_row, rows_per_block, vector_words, unroll, rows_per_thread)
# the first two also with packed_fp16 (schedules/packed_dot.py: fp16 pairs, float32 multiply-adds on WGSL);
# these packed, with the activation loaded as 16-byte words (GemvKnobs.activation_words):
WORDS_SWEEP = [(32, 4, 4, 1, 2), (32, 4, 4, 2, 2), (32, 8, 4, 1, 2), (32, 4, 4, 1, 4), (32, 2, 4, 1, 4)]


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

    @T.prim_func
    def touch(a: T.Buffer((256,), "float32"), b: T.Buffer((256,), "float32")):
        for bx in T.thread_binding(1, thread="blockIdx.x"):
            for tx in T.thread_binding(256, thread="threadIdx.x"):
                b[tx] = a[tx] + T.float32(1)

    mod = tvm.IRModule({"copy": copy, "touch": touch})
    tvm.compile(mod, vulkan.tvm_target("generic")).export_library(str(out / "copy.so"))


def gemv_libraries(out: Path) -> None:
    """One library per (preset, knobs): the four layer matmuls, scheduled by our GEMV rule."""
    import tvm
    from tvm.s_tir import dlight as dl

    from mlcgen.targets import vulkan
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV, GemvKnobs

    index = {}
    for preset in ("nvidia", "generic"):
        variants = [(k, False, False, False) for k in GEMV_SWEEP] + [(k, True, False, False) for k in GEMV_SWEEP[:2]]
        variants += [(k, p, True, False) for k in GEMV_SWEEP[:2] for p in (False, True)]
        variants += [(k, True, False, True) for k in WORDS_SWEEP]
        for knobs, packed, staged, words in variants:
            g = GemvKnobs(*knobs, activation_lanes=4, packed_fp16=packed, stage_activation=staged, activation_words=words)
            flags = ("+packed" if packed else "") + ("+staged" if staged else "") + ("+words" if words else "")
            name = f"{preset}/{'-'.join(map(str, knobs))}{flags}{'*' if g == vulkan.PRESETS[preset].gemv else ''}"
            target = vulkan.tvm_target(preset)
            with target:
                funcs = {shape: gemv_func(n, k, "float32").with_attr("global_symbol", shape) for shape, (n, k) in GEMV_SHAPES.items()}
                mod = dl.ApplyDefaultSchedule(DequantGEMV(g))(tvm.IRModule(funcs))
            file = f"gemv-{len(index)}.so"
            tvm.compile(mod, target).export_library(str(out / file))
            index[file] = name
    (out / "gemv.json").write_text(json.dumps(index, indent=1))


def build(out: Path, *options: str) -> None:
    """Every configuration's library, the copy kernel, the GEMV sweep's libraries and the plugin;
    with `--config LABEL` (repeatable) only those configurations' libraries, no sweep: what
    `run DIR LABEL...` needs."""
    from mlcgen.runtime import plugins, vulkan

    labels = [value for flag, value in zip(options, options[1:]) if flag == "--config"]
    if unknown := set(labels) - set(CONFIGS):
        raise SystemExit(f"--config {sorted(unknown)}: not a configuration of this benchmark ({', '.join(CONFIGS)})")
    chosen = [CONFIGS[label] for label in labels] or CONFIGS.values()
    for model, preset in dict.fromkeys((model, preset) for model, preset, _ in chosen):
        compile_from_config(model, "q4f16_1", preset, out / library(model, preset), CONTEXT_WINDOW, PREFILL, **build_options(options))
    copy_kernel(out)
    if not labels:
        gemv_libraries(out)
    plugins.carry(out, vulkan.build_plugin())


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


def dispatch_floor_us(out: Path) -> dict:
    """Time per dispatch of a one-workgroup kernel (256 floats), 2000 dispatches in a row:
    `chained` (each reads what the previous wrote: wgpu puts a barrier between them) and
    `independent` (16 buffer pairs in turn: no hazard between neighbours), each as GPU time with a
    timestamp after every dispatch (kernel_profile), and as wall time without timestamps
    (`<name> wall`, to the GPU's last result) beside the host's time to record them (`<name> host`)."""
    import tvm

    from mlcgen.runtime import vulkan

    dev = tvm.device("webgpu", 0)
    touch = tvm.runtime.load_module(str(out / "copy.so"))["touch"]
    bufs = [tvm.runtime.tensor(np.zeros(256, np.float32), dev) for _ in range(32)]
    result = {}
    for name, pair in (("chained", lambda i: (bufs[i % 2], bufs[1 - i % 2])),
                       ("independent", lambda i: (bufs[2 * (i % 16)], bufs[2 * (i % 16) + 1]))):
        for i in range(100):
            touch(*pair(i))
        dev.sync()
        with vulkan.kernel_profile() as times:
            for i in range(2000):
                touch(*pair(i))
            dev.sync()
        seconds, calls = times["touch_kernel"]
        result[name] = seconds / calls * 1e6
        start = time.perf_counter()
        for i in range(2000):
            touch(*pair(i))
        recorded = time.perf_counter()
        dev.sync()
        result[f"{name} host"] = (recorded - start) / 2000 * 1e6
        result[f"{name} wall"] = (time.perf_counter() - start) / 2000 * 1e6
    return result


def measure(out: Path, label: str) -> None:
    """One configuration, in a process of its own (bounds checks are fixed per process; device
    memory counters start from zero): writes measure-<label>.json and its logits."""
    from mlcgen.runtime import dist, plugins, vulkan
    from mlcgen.runtime.engine import Engine
    from mlcgen.runtime.sampling import GenerationConfig, Sampler

    plugins.use_carried(out)
    model, preset, _ = CONFIGS[label]
    copies = json.loads((out / "results.json").read_text())
    bandwidth = max(copies["vulkan_copy_gbs"], copies["wgsl_copy_gbs"] or 0)
    start = time.perf_counter()
    engine = Engine(out / library(model, preset), random_weights=True)
    result = {"load_s": time.perf_counter() - start, "decode": {}, "bound": {}}
    manifest = engine.manifest
    ids = np.random.default_rng(0).integers(3, manifest["model"]["config"]["vocab_size"], size=CONTEXT_WINDOW)
    np.save(out / f"logits-{slug(label)}.npy", engine.prefill(ids[:32]))
    token = [1]

    def step():  # one decode step, for the kernel profile
        token[0] = int(engine.decode(token[0]).argmax())

    def greedy(steps=STEPS):
        token[0] = engine.decode_greedy(token[0], steps)[-1]

    def sampled(steps=STEPS):  # as a chat samples by default: drawn on the device
        with closing(engine.sample_stream(token[0], Sampler(GenerationConfig(seed=0)), steps)) as stream:
            token[0] = list(stream)[-1]

    def decode_from(context: int, run) -> tuple[float, dict]:
        """tok/s of run() from `context`, and the plugin's counters per step over it."""
        engine.reset()
        engine.prefill(ids[: context - STEPS - 8])
        token[0] = 1
        run(8)  # warm up, with the kernels the timed steps run (a first sampled step loads the sampler's)
        before = vulkan.counters()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        after = vulkan.counters()
        return STEPS / seconds, {k: (after[k] - before[k]) / STEPS for k in ("dispatches", "submissions", "wait_ns")}

    weights = dist.params_bytes(manifest)
    result["decode_sampled"] = decode_from(128, sampled)[0]
    for context in CONTEXTS:
        result["decode"][context], per_step = decode_from(context, greedy)
        result["dispatches_per_step"] = per_step["dispatches"]
        result["submissions_per_step"] = per_step["submissions"]
        # host time not spent waiting for the GPU: recording, validation, Python, the VM
        result["host_ms_per_step"] = 1e3 / result["decode"][context] - per_step["wait_ns"] / 1e6
        result["bound"][context] = bandwidth * 1e9 / (weights + kv_bytes_per_token(manifest["model"]["config"], context))
    engine.reset()
    engine.prefill(ids[: 128 - 16])
    with vulkan.kernel_profile() as times:
        for _ in range(16):
            step()
    result["kernels"] = kernel_rows(manifest, {k: s / 16 for k, (s, _) in times.items()}, 128)
    prefill = []
    for _ in range(3):
        engine.reset()
        start = time.perf_counter()
        engine.prefill(ids[:PREFILL])
        prefill.append(PREFILL / (time.perf_counter() - start))
    result["prefill"] = max(prefill)
    result["device_bytes_peak"] = vulkan.counters()["peak_bytes"]
    result["params_bytes"], result["kv_cache_bytes"] = weights, dist.kv_cache_bytes(manifest)
    (out / f"measure-{slug(label)}.json").write_text(json.dumps(result, indent=1))


def library(model: str, preset: str) -> str:
    return f"{model}-{preset.replace(':', '-')}"


def slug(label: str) -> str:
    return label.replace(":", "-").replace(" ", "-")


def gemv_sweep(out: Path) -> list[dict]:
    """Each GEMV library: GPU time per call (100 calls, timestamps around each compute pass only:
    kernel_profile(per_pass=True); weights rotated past the L2) and its relative error against numpy."""
    import tvm

    from mlcgen.compiler.quantization import get_quantization
    from mlcgen.runtime import vulkan

    vulkan.load()
    dev = tvm.device("webgpu", 0)
    q4 = get_quantization("q4f16_1")
    names = json.loads((out / "gemv.json").read_text())
    libs = {file: tvm.runtime.load_module(str(out / file)) for file in names}
    rng = np.random.default_rng(0)
    rows = []
    for shape, (n, k) in GEMV_SHAPES.items():
        qw, qs = q4.pack(rng.standard_normal((n, k), dtype=np.float32) * 0.02)
        x = rng.standard_normal((1, 1, k), dtype=np.float32).astype(np.float16)
        ref = x.astype(np.float32)[0, 0] @ q4.unpack(qw, qs).T
        nbytes = qw.nbytes + qs.nbytes + x.nbytes + n * 2
        weights = weight_copies(qw, qs, dev, nbytes)
        copies = len(weights)
        x_dev, y = tvm.runtime.tensor(x, dev), tvm.runtime.empty((1, 1, n), "float16", dev)
        for file, lib in libs.items():
            lib[shape](x_dev, *weights[0], y)
            err = float(np.linalg.norm(y.numpy().astype(np.float32)[0, 0] - ref) / np.linalg.norm(ref))
            for i in range(20):  # untimed: the first calls on new weights run slower (seen 2-4x on the H200)
                lib[shape](x_dev, *weights[i % copies], y)
            with vulkan.kernel_profile(per_pass=True) as times:
                for i in range(100):
                    lib[shape](x_dev, *weights[i % copies], y)
            ((seconds, calls),) = times.values()
            rows.append({"shape": shape, "schedule": names[file], "us": seconds / calls * 1e6, "bytes": nbytes, "rel_err": err})
        del weights
    return rows


def run(out: Path, *labels: str) -> None:
    """Every configuration and the GEMV sweep, or only the configurations `labels`."""
    from mlcgen.runtime import plugins, vulkan

    plugins.use_carried(out)
    results = {"adapter": vulkan.adapter(), "vulkan_copy_gbs": vulkan_copy_gbs(out), "wgsl_copy_gbs": wgsl_copy_gbs(),
               "torch_copy_gbs": torch_copy_gbs(),
               "dispatch_floor_us": dispatch_floor_us(out)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    results["configs"], logits = {}, {}
    for label in labels or CONFIGS:
        checks = CONFIGS[label][2]
        env = {**os.environ, "MLCGEN_WGPU_BOUNDS_CHECKS": "1" if checks else "0"}
        done = subprocess.run([sys.executable, __file__, "measure", str(out), label], env=env)
        if done.returncode:
            results["configs"][label] = {"error": f"exit {done.returncode}"}
            continue
        results["configs"][label] = json.loads((out / f"measure-{slug(label)}.json").read_text())
        logits[label] = np.load(out / f"logits-{slug(label)}.npy")
    same_model = {k: v for k, v in logits.items() if CONFIGS[k][0] == "llama2-7b"}
    if same_model:
        first = next(iter(same_model.values()))
        results["logit_rel_err_vs_first"] = {k: float(np.abs(v - first).max() / np.abs(first).max()) for k, v in same_model.items()}
        results["same_top1"] = all(v.argmax() == first.argmax() for v in same_model.values())
    results["gemv"] = [] if labels else gemv_sweep(out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report(results)


def wgsl_copy_gbs() -> float | None:
    """A hand-written WGSL copy with 16-byte loads and stores, run by wgpu-py in a process of its own
    (benchmarks/wgsl_gemv.py): what the device moves through Vulkan, where TVM's copy kernel stores
    element by element. The bound uses the faster of the two."""
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "wgsl_gemv.py"), "--copy"], capture_output=True, text=True)
    if done.returncode:
        print(f"hand-written WGSL copy not measured: {done.stderr.strip()[-300:]}")
        return None
    return float(done.stdout.split()[-1])


def torch_copy_gbs() -> float | None:
    try:
        from cuda_speed import copy_gbs

        return copy_gbs()
    except Exception as e:  # no torch / no CUDA: the Vulkan figure stands alone
        print(f"torch copy not measured: {e}")
        return None


def report(r: dict) -> None:
    f = r["adapter"]
    print(f"adapter: {f['name']} ({f['backend']}), {f['device_local_heap_bytes'] / 2**30:.0f} GiB device-local, "
          f"subgroups {f['subgroup_size']}, max storage binding {f['max_storage_buffer_binding_size'] / 2**20:.0f} MiB")
    torch_copy = f", torch CUDA copy {r['torch_copy_gbs']:.0f} GB/s" if r["torch_copy_gbs"] else ""
    wgsl = f", hand-written WGSL copy through wgpu {r['wgsl_copy_gbs']:.0f} GB/s" if r["wgsl_copy_gbs"] else ""
    print(f"copy bandwidth (the bound takes the fastest WGSL one): TVM's WGSL kernel through the plugin {r['vulkan_copy_gbs']:.0f} GB/s"
          f"{wgsl}{torch_copy}")
    floor = r["dispatch_floor_us"]
    print(f"GPU time per dispatch of a one-workgroup kernel: {floor['chained']:.1f} us chained, "
          f"{floor['independent']:.1f} us independent (timestamps after each); without timestamps, wall "
          f"{floor['chained wall']:.1f} / {floor['independent wall']:.1f} us, host recording "
          f"{floor['chained host']:.1f} / {floor['independent host']:.1f} us")
    print("\n| q4f16_1, model shape and preset | " + " | ".join(f"decode ctx {c}" for c in CONTEXTS)
          + f" | prefill 512 | dispatches, submissions, host ms per step at ctx {CONTEXTS[-1]} |")
    print("|---|" + "---|" * (len(CONTEXTS) + 2))
    for label, m in r["configs"].items():
        if "error" in m:
            print(f"| {label} | failed: {m['error']} |")
            continue
        cells = [f"{m['decode'][str(c)]:.1f} tok/s ({m['decode'][str(c)] / m['bound'][str(c)]:.0%} of {m['bound'][str(c)]:.0f})" for c in CONTEXTS]
        print(f"| {label} | " + " | ".join(cells) + f" | {m['prefill']:.0f} tok/s | {m['dispatches_per_step']:.0f}, "
              f"{m['submissions_per_step']:.1f}, {m['host_ms_per_step']:.1f} |")
        print(f"| | (greedy, the argmax on the device; sampled at temperature 0.7, top-p 0.95, drawn on the device: "
              f"{m['decode_sampled']:.1f} tok/s at ctx 128) | | | |")
    print(f"\nLlama-2-7B logits on the same weights (32-token prefill) vs the first configuration: "
          + ", ".join(f"{k} {v:.1e}" for k, v in r.get("logit_rel_err_vs_first", {}).items()) + f"; same top-1: {r.get('same_top1')}")
    for label, m in r["configs"].items():
        if "error" in m:
            continue
        print(f"\n{label}: device memory peak {m['device_bytes_peak'] / 2**20:.0f} MiB for params {m['params_bytes'] / 2**20:.0f} "
              f"+ KV {m['kv_cache_bytes'] / 2**20:.0f} MiB; load + random weights {m['load_s']:.0f} s")
        print(f"decode step at ctx 128, per kernel (GPU timestamps; {sum(k['us'] for k in m['kernels']):.0f} us in kernels):")
        print_kernel_rows(m["kernels"], 12)
    print_gemv_sweep(r["gemv"])


def print_gemv_sweep(rows: list[dict]) -> None:
    if not rows:
        return
    print("\ndecode GEMV sweep (threads_per_row-rows_per_block-vector_words-unroll-rows_per_thread; * = the preset's):")
    print(f"{'schedule':22} " + " ".join(f"{s:>16}" for s in GEMV_SHAPES) + f" {'layer GB/s':>10} {'max rel_err':>11}")
    for schedule in dict.fromkeys(g["schedule"] for g in rows):
        mine = [g for g in rows if g["schedule"] == schedule]
        cells = " ".join(f"{g['us']:7.1f} us {g['bytes'] / g['us'] / 1e3:4.0f}" for g in mine)
        total = sum(g["bytes"] for g in mine) / sum(g["us"] for g in mine) / 1e3
        print(f"{schedule:22} {cells} {total:10.0f} {max(g['rel_err'] for g in mine):11.1e}")


if __name__ == "__main__":
    command, out = sys.argv[1], Path(sys.argv[2])
    if command == "measure":
        measure(out, sys.argv[3])
    elif command == "run":
        run(out, *sys.argv[3:])
    elif command == "sweep":  # the GEMV sweep alone
        from mlcgen.runtime import plugins

        plugins.use_carried(out)
        print_gemv_sweep(gemv_sweep(out))
    else:
        build(out, *sys.argv[3:])
