"""Decode and prefill speed on the GPU machine, against the bandwidth bound and PyTorch, in one run.

    python benchmarks/cuda_speed.py build .bench/speed        # here: compile the libraries (TVM compiler)
    python benchmarks/cuda_speed.py build .bench/int8 --int8-activations   # the same, with that build option
    python benchmarks/cuda_speed.py build .bench/v --gemv fold_into_swiglu=True   # a preset GEMV knob changed
    python benchmarks/cuda_speed.py build .bench/a --attention whole_rows=256     # a decode-attention knob
    python benchmarks/cuda_speed.py run .bench/speed          # GPU machine: TVM runtime, torch, transformers
    python benchmarks/cuda_speed.py run .bench/speed llama2-7b   # that model, mlcgen only (to compare builds)

Models: Llama-2-7B and Llama-3-8B shapes, q4f16_1, random weights generated on the device. For each:
decode tok/s at contexts 128, 1024 and 4096 (64 timed greedy steps ending at that context, as
`Engine.decode_greedy` runs them: the argmax on the device, the host a step ahead; the median of 5
such runs, as the host's speed varies; at 128 also sampled as a chat samples by default: top-p
drawn on the device, Engine.sample_stream),
prefill tok/s for 512 tokens, GPU memory in use against params + KV cache, a per-kernel breakdown
of one decode step (CUPTI kernel durations through torch.profiler; bytes each kernel must move,
from the build's manifest; attention's bytes are the KV cache it reads; the GPU's idle time before
each kernel), and the kernels of one 512-token prefill by time. The bound is (weight + KV bytes
read per token) / copy bandwidth measured in the same run. Baselines in the same run: HF
transformers eager fp16, and an int4 weight-only model (PyTorch's tinygemm `_weight_int4pack_mm`,
group 32, bf16 activations) on the same module.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import statistics
import sys
import tempfile
import time
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np

MODELS = {
    "llama2-7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                  "num_key_value_heads": 32, "vocab_size": 32000, "rope_theta": 10000.0},
    "llama3-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                  "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0},
}
CONTEXTS = (128, 1024, 4096)
CONTEXT_WINDOW = 4096
PREFILL = 512
PREFILL_SIZES = (4, 16, 64, 128, 256, PREFILL)  # each prefill entry timed at these prompt lengths
STEPS = 64
REPEATS = 5  # decode timed this many times from the same context: the median, and the spread printed


def hf_config(name: str) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "max_position_embeddings": CONTEXT_WINDOW, "tie_word_embeddings": False, "torch_dtype": "float16",
            "bos_token_id": 1, "eos_token_id": 2, **MODELS[name]}


KNOB_FLAGS = {"--gemv": "gemv", "--attention": "attention"}  # flag -> the preset field whose knobs it changes


def build_options(options) -> dict:
    """compile_from_config's keyword arguments from a build's options: `--int8-activations`, and
    `--gemv KNOB=VALUE` / `--attention KNOB=VALUE` (repeatable), a field of the target preset's
    GemvKnobs / AttentionKnobs changed for this build, so that variants of one commit are built
    side by side (docs/benchmarks.md)."""
    knobs = {}
    for flag, value in zip(options, options[1:]):
        if flag in KNOB_FLAGS:
            knob, _, literal = value.partition("=")
            knobs.setdefault(KNOB_FLAGS[flag], {})[knob] = ast.literal_eval(literal)
    return {"int8_activations": "--int8-activations" in options, "knobs": knobs}


@contextmanager
def preset_knobs(target: str, knobs: dict):
    """The target preset with knobs changed inside the block: {preset field: {knob: value}}."""
    kind, _, name = target.partition(":")
    module = importlib.import_module(f"mlcgen.targets.{kind}")
    name = name or module.default_preset()[0]
    saved = module.PRESETS[name]
    module.PRESETS[name] = dataclasses.replace(saved, **{field: dataclasses.replace(getattr(saved, field), **changed)
                                                         for field, changed in knobs.items()})
    try:
        yield
    finally:
        module.PRESETS[name] = saved


def compile_from_config(model: str, quantization: str, target: str, out: Path, context_window: int, prefill_chunk: int,
                        int8_activations: bool = False, knobs: dict | None = None) -> None:
    """lib.so + manifest.json for a MODELS shape, from its config alone (no weights: the engine
    generates random ones, or the weights are converted later); `mlcgen build`'s options as
    arguments, and `knobs`: preset knobs to change (build_options)."""
    from mlcgen.compiler.build import _memory_estimate, compile_library, plan
    from mlcgen.runtime import dist

    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with preset_knobs(target, knobs or {}), tempfile.TemporaryDirectory() as config_dir:
        (Path(config_dir) / "config.json").write_text(json.dumps(hf_config(model)))
        p = plan(Path(config_dir), quantization, target, context_window, prefill_chunk, int8_activations)
        temporaries, kernels = compile_library(p, out / dist.LIBRARY, None, None)
    p.manifest["memory"] = _memory_estimate(p.manifest, temporaries)
    p.manifest["decode_kernels"] = kernels
    (out / dist.MANIFEST).write_text(json.dumps(p.manifest, indent=1))
    print(f"{out}: compiled for {target}{f' with preset knobs {knobs}' if knobs else ''} in {time.time() - start:.1f} s")


def build(out: Path, *options: str) -> None:
    from mlcgen.runtime import cublas, plugins

    for name in MODELS:
        compile_from_config(name, "q4f16_1", "cuda:sm_90", out / name, CONTEXT_WINDOW, PREFILL, **build_options(options))
    plugins.carry(out, cublas.build_plugin())


# ---------------------------------------------------------------- GPU machine


def copy_gbs() -> float:
    import torch

    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = a.clone()
    b.copy_(a)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 20 / (time.perf_counter() - start) / 1e9


def kv_bytes_per_token(cfg: dict, context: int) -> int:
    """KV cache bytes one decode step reads at `context` (fp16 K and V, all layers)."""
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * context


def timed(call) -> float:
    """Seconds of call(), the device synchronized before and after."""
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def kernel_profile(call, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Device seconds per step by kernel name over call(), which runs `steps` steps, and the
    seconds per step the GPU sat idle before each (from the previous kernel's or copy's end to its
    start: launch gaps and host time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    events = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    totals: dict[str, float] = {}
    idle: dict[str, float] = {}
    for before, e in zip([None, *events], events):
        if before is not None:
            idle[e.name] = idle.get(e.name, 0.0) + max(0, e.time_range.start - before.time_range.end) / 1e6 / steps
        if not e.name.startswith(("Memcpy", "Memset", "cuda")):
            totals[e.name] = totals.get(e.name, 0.0) + e.device_time / 1e6 / steps
    return totals, idle


def kernel_rows(manifest: dict, per_kernel: dict[str, float], context: int) -> list[dict]:
    """Per-kernel seconds per decode step -> rows with the bytes each moves (the manifest's decode
    kernel traffic; the KV cache read for decode attention) and the GB/s achieved, slowest first."""
    traffic = {k["name"]: k["bytes_per_call"] * k["calls"] for k in manifest["decode_kernels"]}
    rows = []
    for kernel, seconds in sorted(per_kernel.items(), key=lambda kv: -kv[1]):
        nbytes = traffic.get(kernel.removesuffix("_kernel"))
        if kernel.startswith("batch_decode_paged_kv"):  # its pages' size is symbolic, not in the traffic
            nbytes = kv_bytes_per_token(manifest["model"]["config"], context) if kernel.endswith("_kernel") else None  # not the merge (_kernel_1)
        rows.append({"kernel": kernel, "us": seconds * 1e6, "bytes": nbytes, "gbs": nbytes / seconds / 1e9 if nbytes else None})
    return rows


def print_kernel_rows(rows: list[dict], limit: int = 16) -> None:
    print("| kernel | us/step | MB/step | GB/s |")
    print("|---|---|---|---|")
    for k in rows[:limit]:
        mb = f"{k['bytes'] / 1e6:.1f}" if k["bytes"] else "-"
        gbs = f"{k['gbs']:.0f}" if k["gbs"] else "-"
        print(f"| {k['kernel']} | {k['us']:.1f} | {mb} | {gbs} |")


def prefill_entries(engine, ids) -> dict:
    """tok/s of each prefill entry (the compiled kernels, and cuBLAS where the library has it) at
    each PREFILL_SIZES length, best of 3; the relative difference of their last-token logits and
    of the next decode step's logits after a PREFILL-token prompt."""
    import tvm

    entries = list(dict.fromkeys(["prefill", engine.prefill_entry]))
    speed, logits = {}, {}
    for entry in entries:
        speed[entry] = {}
        for n in PREFILL_SIZES:
            tokens = tvm.runtime.tensor(ids[:n].astype(np.int32), engine.device)
            best = 0.0
            for _ in range(3):
                engine.reset()
                best = max(best, n / timed(lambda: engine._forward(entry, tokens)))
            speed[entry][n] = best
        logits[entry] = (engine._forward(entry, tokens), engine.decode(int(ids[PREFILL])))
    rel = {}
    if len(entries) == 2:
        (a, a_next), (b, b_next) = logits.values()
        rel = {"prefill": float(np.linalg.norm(b - a) / np.linalg.norm(a)),
               "next_decode": float(np.linalg.norm(b_next - a_next) / np.linalg.norm(a_next))}
    return {"tok_s": speed, "rel_diff": rel}


def mlcgen_model(out: Path, name: str, bandwidth: float) -> dict:
    import torch

    from mlcgen.runtime import dist
    from mlcgen.runtime.engine import Engine
    from mlcgen.runtime.sampling import GenerationConfig, Sampler

    free_before = torch.cuda.mem_get_info()[0]
    engine = Engine(out / name, random_weights=True)
    manifest = engine.manifest
    rng = np.random.default_rng(0)
    ids = rng.integers(3, manifest["model"]["config"]["vocab_size"], size=CONTEXT_WINDOW)
    token = [1]

    def greedy(steps=STEPS):  # the argmax on the device
        token[0] = engine.decode_greedy(token[0], steps)[-1]

    def sampled(steps=STEPS):  # as a chat samples by default: drawn on the device
        with closing(engine.sample_stream(token[0], Sampler(GenerationConfig(seed=0)), steps)) as stream:
            token[0] = list(stream)[-1]

    def decode_from(context: int, run=greedy) -> float:
        engine.reset()
        engine.prefill(ids[: context - STEPS - 8])
        token[0] = 1
        run(8)  # warm up, with the kernels the timed steps run (a first sampled step loads the sampler's)
        return STEPS / timed(run)

    weights = dist.params_bytes(manifest)
    result = {"decode": {}, "decode_spread": {}, "bound": {}}
    for context in CONTEXTS:
        runs = sorted(decode_from(context) for _ in range(REPEATS))  # the host's speed varies between runs
        result["decode"][context], result["decode_spread"][context] = statistics.median(runs), (runs[0], runs[-1])
        result["bound"][context] = bandwidth * 1e9 / (weights + kv_bytes_per_token(manifest["model"]["config"], context))
    result["decode_sampled"] = statistics.median(decode_from(128, sampled) for _ in range(REPEATS))
    if engine._graphs:  # whole-step graphs: one capture per page count reached, timed on the host
        result["captures"] = engine._graphs.captures, engine._graphs.capture_seconds
    result["greedy_mismatch"] = greedy_mismatch(engine, ids)
    torch.cuda.synchronize()
    used = free_before - torch.cuda.mem_get_info()[0]
    result["memory"] = {"used": used, "params": weights, "kv_cache": dist.kv_cache_bytes(manifest)}

    result["prefill_entries"] = prefill_entries(engine, ids)
    result["prefill"] = result["prefill_entries"]["tok_s"][engine.prefill_entry][PREFILL]  # the entry the engine takes

    def prefill_once():
        engine.reset()
        engine.prefill(ids[:PREFILL])

    result["prefill_kernels"] = sorted(kernel_profile(lambda: [prefill_once() for _ in range(3)], 3)[0].items(),
                                       key=lambda kv: -kv[1])

    engine.reset()
    engine.prefill(ids[: 128 - 16])
    token[0] = engine.decode_greedy(1, 1)[-1]
    per_kernel, idle = kernel_profile(lambda: engine.decode_greedy(token[0], 16), 16)
    rows = kernel_rows(manifest, per_kernel, 128)
    result["kernels"] = rows
    result["idle_before"] = sorted(((k, s * 1e6) for k, s in idle.items()), key=lambda kv: -kv[1])
    result["kernel_us"] = sum(r["us"] for r in rows)
    del engine
    return result


def greedy_mismatch(engine, ids, steps: int = 4 * STEPS) -> int | None:
    """The first step at which greedy decoding (the argmax on the device, the host a step ahead)
    and decode + numpy's argmax give different tokens, or None. Both run the same kernels on the
    same state, so any difference is an ordering bug between steps (such as a step reading the
    next one's KV-cache tables)."""
    runs = []
    for on_device in (True, False):
        engine.reset()
        engine.prefill(ids[:100])
        if on_device:
            runs.append(engine.decode_greedy(1, steps))
        else:
            tokens = [1]
            for _ in range(steps):
                tokens.append(int(engine.decode(tokens[-1]).argmax()))
            runs.append(tokens[1:])
    return next((i for i, (a, b) in enumerate(zip(*runs)) if a != b), None)


def pytorch_models(name: str) -> dict:
    """HF transformers eager fp16, then the same module with int4 weight-only linears."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in hf_config(name).items() if k != "architectures"})
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    ids = torch.randint(3, config.vocab_size, (1, CONTEXT_WINDOW), device="cuda")
    with torch.inference_mode():
        results = {"fp16": measure_hf(model, ids)}
        try:
            to_int4(model)
            results["int4"] = measure_hf(model, ids)
        except Exception as e:  # noqa: BLE001 - reported in the table, not hidden
            results["int4"] = {"error": f"{type(e).__name__}: {e}"}
    del model
    torch.cuda.empty_cache()
    return results


def measure_hf(model, ids) -> dict:
    import torch

    prefill = []
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model(ids[:, :PREFILL])
        torch.cuda.synchronize()
        prefill.append(PREFILL / (time.perf_counter() - start))
    out = model(ids[:, : 128 - STEPS], use_cache=True)
    past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)

    def step():
        nonlocal past, token
        o = model(token, past_key_values=past, use_cache=True)
        past, token = o.past_key_values, o.logits[:, -1:].argmax(-1)

    for _ in range(4):
        step()

    def steps():
        for _ in range(STEPS - 4):
            step()

    return {"prefill": max(prefill), "decode128": (STEPS - 4) / timed(steps)}


def to_int4(model, group: int = 32) -> None:
    """Every decoder nn.Linear -> tinygemm int4 (asymmetric, group 32); the module then runs bf16."""
    import torch

    class Int4Linear(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            w = linear.weight.detach().float()
            n, k = w.shape
            g = w.reshape(n, k // group, group)
            lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
            scale = ((hi - lo) / 15).clamp(min=1e-6)
            codes = ((g - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
            packed = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
            self.weight = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
            zero = lo + 8 * scale  # tinygemm dequantizes (code - 8) * scale + zero
            self.scales_and_zeros = torch.stack([scale, zero], -1).reshape(n, k // group, 2).transpose(0, 1).contiguous().bfloat16()
            self.out_features = n

        def forward(self, x):
            y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, x.shape[-1]).bfloat16(), self.weight, group, self.scales_and_zeros)
            return y.reshape(*x.shape[:-1], self.out_features)

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for child, module in list(parent.named_children()):
                if isinstance(module, torch.nn.Linear):
                    setattr(parent, child, Int4Linear(module))
    model.bfloat16()
    torch.cuda.empty_cache()


def run(out: Path, names: list[str]) -> None:
    """names: only these models, and mlcgen only (to compare builds); none: the full table."""
    import torch

    from mlcgen.runtime import cuda as cuda_runtime
    from mlcgen.runtime import plugins

    plugins.use_carried(out)
    cuda_runtime.enable()
    torch.cuda.init()
    bandwidth = copy_gbs()
    results = {"device": torch.cuda.get_device_name(), "copy_gbs": bandwidth, "models": {}}
    for name in names or MODELS:
        results["models"][name] = {"mlcgen": mlcgen_model(out, name, bandwidth), "pytorch": {}}
        torch.cuda.empty_cache()
    for name in [] if names else MODELS:
        results["models"][name]["pytorch"] = pytorch_models(name)
    (out / "result.json").write_text(json.dumps(results, indent=1))
    report(results)


def report(r: dict) -> None:
    print(f"{r['device']}: copy {r['copy_gbs']:.0f} GB/s\n")
    print("| model | system | prefill 512 tok/s | decode ctx 128 | decode ctx 1024 | decode ctx 4096 |")
    print("|---|---|---|---|---|---|")
    for name, m in r["models"].items():
        me = m["mlcgen"]
        cells = [f"{me['decode'][c]:.1f} ({me['decode'][c] / me['bound'][c]:.0%} of {me['bound'][c]:.0f})" for c in CONTEXTS]
        print(f"| {name} | mlcgen q4f16_1 | {me['prefill']:.0f} | {' | '.join(cells)} |")
        spread = ", ".join(f"ctx {c}: {lo:.1f}-{hi:.1f}" for c, (lo, hi) in me["decode_spread"].items())
        print(f"| | (decode: median of {REPEATS} runs of {STEPS} greedy steps; {spread}; sampled at temperature 0.7, "
              f"top-p 0.95, drawn on the device: {me['decode_sampled']:.1f} at ctx 128) | | | | |")
        if "captures" in me:
            count, seconds = me["captures"]
            print(f"| | (decode graphs captured {count} times, {seconds / count * 1e3:.2f} ms each on the host, "
                  f"once per page count reached) | | | | |")
        mismatch = me["greedy_mismatch"]
        print(f"| | (greedy tokens {'equal' if mismatch is None else f'DIFFER from step {mismatch}'} against decode + "
              f"numpy's argmax over {4 * STEPS} steps) | | | | |")
        for system, p in m["pytorch"].items():
            if "error" in p:
                print(f"| {name} | PyTorch {system} | failed: {p['error'][:80]} | | | |")
            else:
                print(f"| {name} | PyTorch {system} eager | {p['prefill']:.0f} | {p['decode128']:.1f} | | |")
    for name, m in r["models"].items():
        mem = m["mlcgen"]["memory"]
        limit = (mem["params"] + mem["kv_cache"]) * 1.1
        print(f"\n{name} GPU memory in use: {mem['used'] / 2**20:.0f} MiB; params {mem['params'] / 2**20:.0f} + KV cache "
              f"{mem['kv_cache'] / 2**20:.0f} MiB (+10%: {limit / 2**20:.0f} MiB): {'within' if mem['used'] <= limit else 'OVER'}")
    for name, m in r["models"].items():
        me = m["mlcgen"]
        step_us = 1e6 / me["decode"][128]
        print(f"\n{name} decode step at ctx 128: {step_us:.0f} us wall, {me['kernel_us']:.0f} us in kernels")
        print_kernel_rows(me["kernels"])
        print(f"GPU idle {sum(us for _, us in me['idle_before']):.0f} us a step; before: " +
              ", ".join(f"{kernel} {us:.0f}" for kernel, us in me["idle_before"][:8]))
    for name, m in r["models"].items():
        entries = m["mlcgen"]["prefill_entries"]
        print(f"\n{name} prefill tok/s by prompt length (best of 3; the engine prefills with the last entry); "
              f"logits of the two entries differ by {entries['rel_diff']}")
        print("| entry | " + " | ".join(f"{n} tokens" for n in PREFILL_SIZES) + " |\n|---|" + "---|" * len(PREFILL_SIZES))
        for entry, by_size in entries["tok_s"].items():
            print(f"| {entry} | " + " | ".join(f"{by_size[n]:.0f}" for n in PREFILL_SIZES) + " |")
    for name, m in r["models"].items():
        kernels = m["mlcgen"]["prefill_kernels"]
        print(f"\n{name} prefill of {PREFILL} tokens: {PREFILL / m['mlcgen']['prefill'] * 1e3:.1f} ms wall, "
              f"{sum(us for _, us in kernels) * 1e3:.1f} ms in kernels")
        print("| kernel | ms |\n|---|---|")
        for kernel, seconds in kernels[:10]:
            print(f"| {kernel} | {seconds * 1e3:.2f} |")


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]), *sys.argv[3:])
    else:
        run(Path(sys.argv[2]), sys.argv[3:])
