"""Compile Llama-2-7B-shape q4f16_1 libraries for both ROCm presets from the config alone (the
weights do not change the code), for `mlcgen inspect` (docs/rocm.md).

    python benchmarks/rocm_libraries.py OUT      # writes OUT/gfx1100, OUT/gfx90a; then: mlcgen inspect OUT/gfx1100
"""

from __future__ import annotations

import sys
from pathlib import Path

from cuda_speed import compile_from_config

if __name__ == "__main__":
    for arch in ("gfx1100", "gfx90a"):
        compile_from_config("llama2-7b", "q4f16_1", f"rocm:{arch}", Path(sys.argv[1]) / arch, 4096, 2048)
