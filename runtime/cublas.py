"""cuBLAS for CUDA libraries' prefills (runtime/cublas/plugin.cc: `mlcgen.cublas.q4_matmul_nt`).

The plugin is compiled like the Vulkan one (runtime/plugins.py) and needs no CUDA headers; the
cuBLAS it calls is the one on the machine: $MLCGEN_CUBLAS, the nvidia wheels PyTorch installs, or
the CUDA toolkit's.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from functools import cache
from pathlib import Path

from ..errors import ParamsError
from . import plugins

SOURCE = Path(__file__).parent / "cublas" / "plugin.cc"
NAME = "mlcgen_cublas"
GEMM = "mlcgen.cublas.q4_matmul_nt"  # what the plugin registers and prefill_cublas calls


def _candidates() -> list[str]:
    dirs = []
    nvidia = importlib.util.find_spec("nvidia")
    for root in (nvidia.submodule_search_locations or []) if nvidia else []:
        dirs += [f"{root}/cu*/lib", f"{root}/cublas/lib"]  # CUDA 13 wheels, CUDA 12 wheels
    dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/*/lib", "/usr/lib/x86_64-linux-gnu"]
    return sorted({p for d in dirs for p in glob.glob(f"{d}/libcublas.so*")}, reverse=True)


def library() -> Path:
    """The libcublas to load: $MLCGEN_CUBLAS, else the newest found."""
    if os.environ.get("MLCGEN_CUBLAS"):
        return Path(os.environ["MLCGEN_CUBLAS"])
    found = _candidates()
    if not found:
        raise ParamsError("no libcublas found (looked in the nvidia pip wheels, /usr/local/cuda); "
                          "pip install nvidia-cublas, or set MLCGEN_CUBLAS to its path")
    return Path(found[0])


def build_plugin() -> Path:
    return plugins.build(SOURCE, NAME)


@cache
def load() -> Path:
    """Load cuBLAS (and cuBLASLt beside it, which it needs) and register the plugin's GEMM; the
    cuBLAS used. Raises ParamsError when either is missing here; the GEMM is then registered as a
    function that raises, because the VM resolves every function a library names when it loads
    it, also those of entries the caller will not run."""
    import tvm_ffi

    try:
        cublas = library()
        for lt in sorted(cublas.parent.glob("libcublasLt.so*"), reverse=True)[:1]:
            plugins.load_global(lt)
        plugins.load_global(cublas)
        plugins.load_global(build_plugin())
        return cublas
    except (ParamsError, OSError) as e:
        message = f"cuBLAS is not available: {e}"

        def unavailable(*args):
            raise RuntimeError(message)

        tvm_ffi.register_global_func(GEMM, unavailable, override=True)
        raise ParamsError(message) from e
