"""Whole-step CUDA graphs (runtime/cuda_graph.py) on the GPU machine: whether greedy decoding with
the host a step ahead agrees with decode + the host's argmax, and what a decode step and a
capture cost.

    python benchmarks/cuda_speed.py build .bench/speed              # here
    python benchmarks/decode_graphs.py .bench/speed/llama2-7b       # GPU machine

Prints, on random weights: the first step at which greedy decoding (the host a step ahead) and
decode + numpy's argmax disagree (cuda_speed.greedy_mismatch; none expected); us per step over 64
greedy steps crossing page boundaries, with each new page count's graph updated in place and
instantiated afresh, and the captures' host time; us per step inside one page (no capture); and
an eager VM decode call's host time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from cuda_speed import greedy_mismatch


def capture_costs(engine, ids) -> None:
    graphs = engine._graphs
    for mode in ("updated in place", "instantiated"):
        graphs.can_update = mode == "updated in place"
        per_step, graphs.captures, graphs.capture_seconds = [], 0, 0.0
        for _ in range(3):
            engine.reset()
            engine.prefill(ids[:100])
            start = time.perf_counter()
            engine.decode_greedy(1, 64)
            per_step.append((time.perf_counter() - start) / 64 * 1e6)
        print(f"graphs {mode}: 64 greedy steps from context 100, {min(per_step):.0f}-{max(per_step):.0f} us a step; "
              f"{graphs.captures} captures, {graphs.capture_seconds / graphs.captures * 1e3:.2f} ms each", flush=True)
    graphs.can_update = True
    for _ in range(3):
        engine.reset()
        engine.prefill(ids[:96])
        engine.decode_greedy(1, 1)  # captures the graph of 7 pages
        start = time.perf_counter()
        engine.decode_greedy(5, 14)  # lengths 98 to 111: the same page count
        print(f"14 steps inside one page: {(time.perf_counter() - start) / 14 * 1e6:.0f} us a step", flush=True)


def eager_call(engine, ids) -> None:
    engine.reset()
    engine.prefill(ids[:100])
    seconds = []
    for _ in range(10):
        embed = engine._entries["embed"](engine._token, engine.params)._create_view((1, 1, engine.hidden_size))
        kv = engine.kv_step(1)
        engine.device.sync()
        start = time.perf_counter()
        engine._entries["decode"](embed, *kv, engine.params)
        seconds.append(time.perf_counter() - start)
        engine.device.sync()
        engine.length += 1
    print(f"an eager VM decode call: {np.median(seconds) * 1e6:.0f} us of host time", flush=True)


def main(dist: Path) -> None:
    from mlcgen.runtime import cuda, plugins
    from mlcgen.runtime.engine import Engine

    cuda.enable()
    plugins.use_carried(dist.parent)
    engine = Engine(dist, random_weights=True)
    if engine._graphs is None:
        raise SystemExit(f"{dist}: decode runs without whole-step graphs (see the warning above)")
    ids = np.random.default_rng(0).integers(3, engine.manifest["model"]["config"]["vocab_size"], size=512)
    print(f"greedy and host argmax first differ at step {greedy_mismatch(engine, ids)}", flush=True)
    capture_costs(engine, ids)
    eager_call(engine, ids)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
