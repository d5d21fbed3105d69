"""Loading CUDA libraries with the TVM runtime alone.

`tvm.compile` stores CUDA C source in the library; the kernels are compiled when it is loaded,
through the global callback `tvm_callback_cuda_compile`. TVM's own callback needs the compiler
package, so with only the runtime installed we register one that runs nvcc for the device's arch,
and cache its output on disk by (source hash, arch): a second load compiles nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import tvm
import tvm_ffi

CACHE = Path(os.environ.get("MLCGEN_CUDA_CACHE", Path.home() / ".cache" / "mlcgen" / "cuda"))


def _arch() -> str:
    major, minor = tvm.cuda(0).compute_version.split(".")
    return f"sm_{major}{minor}"


def compile_cuda(source: str, target_format: str = "fatbin") -> bytearray:
    arch = _arch()
    key = hashlib.sha256(f"{arch}\n{target_format}\n{source}".encode()).hexdigest()[:32]
    cached = CACHE / f"{key}.{target_format}"
    if cached.is_file():
        return bytearray(cached.read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "kernels.cu"), Path(tmp, f"kernels.{target_format}")
        src.write_text(source)
        cmd = ["nvcc", f"--{target_format}", "-O3", f"-arch={arch}", "-lineinfo", "-o", str(out), str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{result.stderr}")
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp_cached = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp_cached.write_bytes(out.read_bytes())
        tmp_cached.rename(cached)  # atomic: a concurrent loader never reads half a file
        return bytearray(cached.read_bytes())


def enable() -> None:
    """Make CUDA libraries loadable: the runtime's CUDA plugin and our nvcc callback."""
    plugin = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    if plugin.is_file():  # runtime-only installs do not load device plugins by themselves
        ctypes.CDLL(str(plugin), mode=ctypes.RTLD_GLOBAL)
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", lambda code, target=None: compile_cuda(code), override=True)
