"""The CUDA build of a small model against the CPU build's logits (written here, checked on the
GPU machine): the same prompt prefilled, then 32 teacher-forced decode steps.

    python benchmarks/cuda_check.py make OUT MODEL_DIR     # here: builds cpu + cuda, saves reference logits
    python benchmarks/cuda_check.py check OUT              # GPU machine
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

IDS = [3, 17, 42, 5, 8, 11, 2] + list(range(20, 52))


def make(out: Path, model_dir: Path) -> None:
    from mlcgen.compiler.build import build
    from mlcgen.runtime import Engine

    for quant in ("q0f32", "q4f16_1"):
        cpu = build(model_dir, quant, "cpu", output=out / f"cpu-{quant}", log=None)
        build(model_dir, quant, "cuda", output=out / f"cuda-{quant}", log=None)
        engine = Engine(cpu)
        logits = [engine.prefill(IDS[:7])] + [engine.decode(t) for t in IDS[7:]]
        np.save(out / f"reference-{quant}.npy", np.stack(logits))
        for f in (out / f"cpu-{quant}").iterdir():  # only the CUDA folder travels
            f.unlink()
        (out / f"cpu-{quant}").rmdir()


def check(out: Path) -> None:
    from mlcgen.runtime import Engine

    for quant, tolerance in (("q0f32", 1e-4), ("q4f16_1", 1e-2)):
        if not (out / f"reference-{quant}.npy").exists():
            continue
        ref = np.load(out / f"reference-{quant}.npy")
        engine = Engine(out / f"cuda-{quant}")
        got = np.stack([engine.prefill(IDS[:7])] + [engine.decode(t) for t in IDS[7:]])
        err = max(float(np.linalg.norm(g - r) / np.linalg.norm(r)) for g, r in zip(got, ref))
        same = bool((got.argmax(-1) == ref.argmax(-1)).all())
        print(f"cuda {quant}: max relative logit error vs cpu {err:.2e} (bound {tolerance}), argmax identical: {same}")


if __name__ == "__main__":
    {"make": lambda: make(Path(sys.argv[2]), Path(sys.argv[3])), "check": lambda: check(Path(sys.argv[2]))}[sys.argv[1]]()
