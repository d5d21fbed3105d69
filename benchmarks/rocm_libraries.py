"""Compile Llama-2-7B-shape q4f16_1 libraries for both ROCm presets from the config alone (the
weights do not change the code), for `mlcgen inspect` (docs/rocm.md).

    python benchmarks/rocm_libraries.py OUT      # writes OUT/gfx1100, OUT/gfx90a; then: mlcgen inspect OUT/gfx1100
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from cuda_speed import hf_config


def main(out: Path) -> None:
    from mlcgen.compiler.build import _memory_estimate, compile_library, plan
    from mlcgen.runtime import dist

    for arch in ("gfx1100", "gfx90a"):
        with tempfile.TemporaryDirectory() as config_dir:
            (Path(config_dir) / "config.json").write_text(json.dumps(hf_config("llama2-7b")))
            p = plan(Path(config_dir), "q4f16_1", f"rocm:{arch}", 4096, 2048)
        (out / arch).mkdir(parents=True, exist_ok=True)
        start = time.time()
        temporaries, kernels = compile_library(p, out / arch / dist.LIBRARY, None, None)
        p.manifest["memory"] = _memory_estimate(p.manifest, temporaries)
        p.manifest["decode_kernels"] = kernels
        (out / arch / dist.MANIFEST).write_text(json.dumps(p.manifest, indent=1))
        print(f"{arch}: compiled in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
