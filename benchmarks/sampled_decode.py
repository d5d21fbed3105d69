"""Sampled decoding on the GPU machine: top-p drawn on the device against greedy and against the draw
on the host, in one process, and the device's draws checked against numpy's nucleus.

    python benchmarks/cuda_speed.py build .bench/speed         # here (or vulkan_speed's libraries)
    python benchmarks/sampled_decode.py .bench/speed/llama2-7b .bench/speed/llama3-8b   # there

For each library (random weights): decode tok/s from context 128, 128 steps, twice in turn for
greedy (Engine.decode_greedy), sampled on the device (Engine.sample_stream, temperature 0.7,
top-p 0.95, as a chat samples by default) and sampled on the host (Engine.decode + the numpy
Sampler, what a chat did before session 22); the sample entry's kernels (CUDA: CUPTI times);
the stream's tokens against decode + the sample entry step by step; and over a grid of 1000
uniform numbers, whether every draw falls in the nucleus of a decode row and of a flat row and
each nucleus token is drawn as often as its probability (within one draw).
"""

from __future__ import annotations

import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np

CONFIGS = [(0.7, 0.95), (1.0, 0.5), (2.0, 0.99), (1.0, 1.0), (0.5, 1e-6)]  # (temperature, top_p)
GRID = 1000


def state(engine, temperature: float, top_p: float, uniforms: np.ndarray) -> list:
    import tvm

    arrays = (np.array([1 / temperature, top_p], np.float32), uniforms.astype(np.float32), np.zeros(1, np.int32))
    return [tvm.runtime.tensor(a, engine.device) for a in arrays]


def check_draws(engine, row: np.ndarray, label: str) -> bool:
    import tvm

    from mlcgen.runtime.sampling import nucleus

    x = tvm.runtime.tensor(row.reshape(1, 1, -1), engine.device)
    ok = True
    for temperature, top_p in CONFIGS:
        counts: dict[int, int] = {}
        for i in range(GRID):
            token = int(engine.vm["sample"](x, *state(engine, temperature, top_p, np.full(256, (i + 0.5) / GRID))).numpy()[0])
            counts[token] = counts.get(token, 0) + 1
        want = nucleus(row, temperature, top_p)
        err = max(abs(counts.get(t, 0) - GRID * p) for t, p in want.items())
        good = set(counts) <= set(want) and err <= 1.001
        ok &= good
        print(f"  {label}, temperature {temperature}, top-p {top_p}: nucleus {len(want)} tokens, {len(counts)} drawn, "
              f"{len(set(counts) - set(want))} outside it, largest count error {err:.2f} draws: {'ok' if good else 'FAIL'}")
    return ok


def prompt(engine, length: int) -> np.ndarray:
    return np.arange(length) % min(1000, engine.manifest["model"]["config"]["vocab_size"])


def decode_speeds(engine) -> None:
    from mlcgen.runtime.sampling import GenerationConfig, Sampler

    def device():
        with closing(engine.sample_stream(token, Sampler(GenerationConfig(seed=0)), 128)) as stream:
            list(stream)

    def host():
        sampler, t = Sampler(GenerationConfig(seed=0)), token
        for _ in range(128):
            t = sampler(engine.decode(t))

    for _ in range(2):
        for name, run in (("greedy", lambda: engine.decode_greedy(token, 128)), ("sampled on the device", device),
                          ("sampled on the host", host)):
            engine.reset()
            token = int(engine.prefill(prompt(engine, 128)).argmax())
            start = time.perf_counter()
            run()
            print(f"  decode from context 128, {name}: {128 / (time.perf_counter() - start):.1f} tok/s", flush=True)


def stream_agrees(engine, prompt_ids, steps: int, config) -> bool:
    """Engine.sample_stream's tokens from `prompt_ids` (run first: on a new CUDA engine the first
    graph captured is a sampling one) against decode + the sample entry step by step."""
    import tvm

    from mlcgen.runtime.sampling import Sampler

    engine.reset()
    first = int(engine.prefill(prompt_ids).argmax())
    with closing(engine.sample_stream(first, Sampler(config), steps)) as stream:
        got = list(stream)
    engine.reset()
    engine.prefill(prompt_ids)
    sampler, tokens, token = Sampler(config), [], first
    args = state(engine, config.temperature, config.top_p, sampler.uniforms())
    for _ in range(steps):
        logits = tvm.runtime.tensor(engine.decode(token).reshape(1, 1, -1), engine.device)
        token = int(engine.vm["sample"](logits, *args).numpy()[0])
        tokens.append(token)
    return got == tokens


def sample_kernels(engine, row: np.ndarray) -> None:
    import tvm

    x = tvm.runtime.tensor(row.reshape(1, 1, -1), engine.device)
    args = state(engine, 0.7, 0.95, np.full(256, 0.3))
    if engine.manifest["target"]["device"] == "cuda":
        from cuda_speed import kernel_profile

        totals, _ = kernel_profile(lambda: [engine.vm["sample"](x, *args) for _ in range(20)], 20)
    else:
        from mlcgen.runtime import vulkan

        with vulkan.kernel_profile() as times:
            for _ in range(20):
                engine.vm["sample"](x, *args)
            engine.device.sync()
        totals = {name: seconds / 20 for name, (seconds, _) in times.items()}
        print("  (Vulkan: each dispatch's time includes ~4.7 us of timestamps)")
    for name in sorted(totals, key=totals.get, reverse=True):
        print(f"  {name[:40]:40} {totals[name] * 1e6:7.2f} us a token")
    print(f"  {'all':40} {sum(totals.values()) * 1e6:7.2f} us a token")


def main(dists: list[str]) -> None:
    from mlcgen.runtime import plugins
    from mlcgen.runtime.engine import Engine
    from mlcgen.runtime.sampling import GenerationConfig

    failed = []
    for dist in dists:
        plugins.use_carried(Path(dist).parent)
        engine = Engine(dist, random_weights=True)
        print(f"{dist} ({engine.manifest['target']['name']})", flush=True)
        decode_speeds(engine)
        engine.reset()
        engine.prefill(np.arange(16))
        row = engine.decode(1)
        sample_kernels(engine, row)
        agrees = stream_agrees(engine, prompt(engine, 100), 48, GenerationConfig(temperature=1.0, top_p=0.9, seed=5))
        print(f"  sample_stream's 48 tokens equal decode + the sample entry's: {agrees}")
        ok = check_draws(engine, row, "decode row") & check_draws(engine, (row * 0.05).astype(np.float32), "flat row")
        if not (agrees and ok):
            failed.append(dist)
        del engine
    if failed:
        raise SystemExit(f"device sampling disagrees with numpy or with itself: {', '.join(failed)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(sys.argv[1:])
