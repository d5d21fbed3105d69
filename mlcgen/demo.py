"""The zero-setup default: the small demo model shipped in mlcgen/demo_model, compiled for the CPU
on first use into a cache and reused after that."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_DIR = Path(__file__).parent / "demo_model"
QUANTIZATION = "q4f32_1"  # 4-bit weights, fp32 math: x86 CPUs have no fast fp16 arithmetic
TARGET = "cpu"


def cache_root() -> Path:
    """$MLCGEN_CACHE, else dist/ of the source checkout this runs from, else ~/.cache/mlcgen."""
    if os.environ.get("MLCGEN_CACHE"):
        return Path(os.environ["MLCGEN_CACHE"])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and os.access(checkout, os.W_OK):
        return checkout / "dist"
    return Path.home() / ".cache" / "mlcgen"


def demo_dist(log=print) -> Path:
    """The built demo folder, building it first if it is missing or was made by another mlcgen."""
    from .errors import ParamsError
    from .runtime import dist

    out = cache_root() / f"mlcgen-demo-{QUANTIZATION}-{TARGET}"
    try:
        if (out / dist.LIBRARY).is_file() and dist.read_manifest(out):
            return out
    except ParamsError:  # unreadable, or written by an mlcgen with another format: rebuild
        pass
    from .compiler.build import build

    log(f"First use: compiling the demo model for the CPU into {out} (once, about 10 s).")
    return build(MODEL_DIR, QUANTIZATION, TARGET, output=out, log=log)
