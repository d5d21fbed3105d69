"""The CUDA build of a small model against the CPU build's logits (written here, checked on the
GPU machine): a prompt prefilled, then teacher-forced decode steps; once with a 7-token prompt
(the compiled prefill kernels) and once with a 32-token prompt through the cuBLAS prefill entry.

    python benchmarks/cuda_check.py make OUT MODEL_DIR     # here: builds cpu + cuda, saves reference logits
    python benchmarks/cuda_check.py check OUT              # GPU machine
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

IDS = [3, 17, 42, 5, 8, 11, 2] + list(range(20, 52))
PROMPTS = {"prefill": 7, "prefill_cublas": 32}  # entry: prompt length; the rest of IDS is decoded
TOLERANCE = 1e-2  # relative logit error, q4f16_1 (fp16 activations) against the CPU build


def steps(engine, prompt: int) -> np.ndarray:
    engine.reset()
    return np.stack([engine.prefill(IDS[:prompt])] + [engine.decode(t) for t in IDS[prompt:]])


def make(out: Path, model_dir: Path) -> None:
    from mlcgen.compiler.build import build
    from mlcgen.runtime import Engine
    from mlcgen.runtime import cublas, plugins

    cpu = build(model_dir, "q4f16_1", "cpu", output=out / "cpu", log=None)
    build(model_dir, "q4f16_1", "cuda", output=out / "cuda", log=None)
    engine = Engine(cpu)
    for prompt in PROMPTS.values():
        np.save(out / f"reference-{prompt}.npy", steps(engine, prompt))
    for f in cpu.iterdir():  # only the CUDA folder travels
        f.unlink()
    cpu.rmdir()
    plugins.carry(out, cublas.build_plugin())


def check(out: Path) -> None:
    from mlcgen.runtime import Engine
    from mlcgen.runtime import plugins

    plugins.use_carried(out)
    engine = Engine(out / "cuda")
    if engine.prefill_entry != "prefill_cublas":
        raise SystemExit("the cuBLAS prefill entry did not load (see the warning above)")
    for name, prompt in PROMPTS.items():
        engine.prefill_entry = name
        ref, got = np.load(out / f"reference-{prompt}.npy"), steps(engine, prompt)
        err = max(float(np.linalg.norm(g - r) / np.linalg.norm(r)) for g, r in zip(got, ref))
        same = bool((got.argmax(-1) == ref.argmax(-1)).all())
        print(f"cuda q4f16_1, {name} ({prompt} tokens, {len(IDS) - prompt} decode steps): max relative logit error "
              f"vs cpu {err:.2e} (bound {TOLERANCE}), argmax identical: {same}")
        if err > TOLERANCE or not same:
            raise SystemExit(f"{name}: the CUDA build disagrees with the CPU build")


if __name__ == "__main__":
    {"make": lambda: make(Path(sys.argv[2]), Path(sys.argv[3])), "check": lambda: check(Path(sys.argv[2]))}[sys.argv[1]]()
