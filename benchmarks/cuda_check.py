"""CUDA builds of a small model against its CPU builds' logits (written here, checked on the GPU
machine): a prompt prefilled, then teacher-forced decode steps (each a whole-step CUDA graph
replay, runtime/cuda_graph.py). q4f16_1 twice: a 7-token prompt through the compiled prefill
kernels and a 32-token prompt through the cuBLAS entry; q0f16 (float weights: dlight's Matmul and
GEMV rules) once. Then greedy decoding (the argmax on the device) from the 7-token prompt against
the CPU build's greedy tokens.

    python benchmarks/cuda_check.py make OUT MODEL_DIR     # here: builds cpu + cuda, saves reference logits
    python benchmarks/cuda_check.py check OUT              # GPU machine (the quantizations whose builds are in OUT)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

IDS = [3, 17, 42, 5, 8, 11, 2] + list(range(20, 52))
RUNS = {"q4f16_1": {"prefill": 7, "prefill_cublas": 32}, "q0f16": {"prefill": 7}}  # entry: prompt length
TOLERANCE = 1e-2  # relative logit error, fp16 activations against the CPU build
GREEDY = 72  # greedy tokens compared (from 7 prompt tokens: across 4 pages of 16)


def steps(engine, prompt: int) -> np.ndarray:
    engine.reset()
    return np.stack([engine.prefill(IDS[:prompt])] + [engine.decode(t) for t in IDS[prompt:]])


def greedy(engine) -> np.ndarray:
    engine.reset()
    first = int(engine.prefill(IDS[:7]).argmax())
    return np.array([first] + engine.decode_greedy(first, GREEDY))


def make(out: Path, model_dir: Path) -> None:
    from mlcgen.compiler.build import build
    from mlcgen.runtime import Engine
    from mlcgen.runtime import cublas, plugins

    for quant, entries in RUNS.items():
        cpu = build(model_dir, quant, "cpu", output=out / f"cpu-{quant}", log=None)
        build(model_dir, quant, "cuda", output=out / quant, log=None)
        engine = Engine(cpu)
        for prompt in entries.values():
            np.save(out / f"reference-{quant}-{prompt}.npy", steps(engine, prompt))
        np.save(out / f"greedy-{quant}.npy", greedy(engine))
        for f in cpu.iterdir():  # only the CUDA folders travel
            f.unlink()
        cpu.rmdir()
    plugins.carry(out, cublas.build_plugin())


def check(out: Path) -> None:
    from mlcgen.runtime import Engine
    from mlcgen.runtime import plugins
    from mlcgen.runtime.sampling import GenerationConfig
    from sampled_decode import stream_agrees

    plugins.use_carried(out)
    failed, built = [], [quant for quant in RUNS if (out / quant).is_dir()]
    if not built:
        raise SystemExit(f"no build in {out}: run `make` first")
    for quant in RUNS.keys() - built:
        print(f"cuda {quant}: not in {out} (left out of what was carried), not checked")
    for quant in built:
        entries = RUNS[quant]
        agrees = stream_agrees(Engine(out / quant), IDS[:7], GREEDY, GenerationConfig(temperature=1.5, top_p=0.95, seed=0))
        print(f"cuda {quant}: {GREEDY} sampled tokens (drawn on the device, graph replays) equal decode + the sample entry's: {agrees}")
        if not agrees:
            failed.append(f"{quant} sampled")
        engine = Engine(out / quant)
        if engine.prefill_entry != list(entries)[-1]:
            raise SystemExit(f"{quant}: the engine prefills with {engine.prefill_entry}, not {list(entries)[-1]} (see any warning above)")
        for name, prompt in entries.items():
            engine.prefill_entry = name
            ref, got = np.load(out / f"reference-{quant}-{prompt}.npy"), steps(engine, prompt)
            err = max(float(np.linalg.norm(g - r) / np.linalg.norm(r)) for g, r in zip(got, ref))
            same = bool((got.argmax(-1) == ref.argmax(-1)).all())
            print(f"cuda {quant}, {name} ({prompt} tokens, {len(IDS) - prompt} decode steps): max relative logit "
                  f"error vs cpu {err:.2e} (bound {TOLERANCE}), argmax identical: {same}")
            if err > TOLERANCE or not same:
                failed.append(f"{quant} {name}")
        ref, got = np.load(out / f"greedy-{quant}.npy"), greedy(engine)
        print(f"cuda {quant}: {GREEDY} greedy tokens (the argmax on the device) equal the CPU build's: {np.array_equal(ref, got)}")
        if not np.array_equal(ref, got):
            failed.append(f"{quant} greedy")
    if failed:
        raise SystemExit(f"the CUDA build disagrees with the CPU build: {', '.join(failed)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    {"make": lambda: make(Path(sys.argv[2]), Path(sys.argv[3])), "check": lambda: check(Path(sys.argv[2]))}[sys.argv[1]]()
