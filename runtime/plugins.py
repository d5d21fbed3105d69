"""Native runtime plugins of this project (runtime/*/plugin.cc), compiled from source with the
system C++ compiler against the headers the tvm and tvm-ffi wheels ship, once per (source, wheel
versions), into a cache. A vendor library a plugin calls (wgpu-native, cuBLAS) is not linked: its
symbols stay undefined, and the caller loads the library into the global scope before the plugin.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ParamsError

CACHE = Path(os.environ.get("MLCGEN_PLUGIN_CACHE", Path.home() / ".cache" / "mlcgen" / "plugins"))


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise ParamsError(f"the runtime needs the Python package {name!r}; pip install mlcgen's dependencies")
    return Path(spec.origin).parent


def path(source: Path, name: str, versions: str = "") -> Path:
    """Where the plugin for this source, these wheels and `versions` (of the vendor library's
    package) lives, built or not."""
    import tvm
    import tvm_ffi

    # tvm's own version string: runtime-only installs (the GPU machine) carry no package metadata
    key = hashlib.sha256(source.read_bytes() + f"{tvm.__version__}\n{tvm_ffi.__version__}\n{versions}".encode()).hexdigest()[:16]
    return CACHE / f"lib{name}-{key}.so"


def build(source: Path, name: str, versions: str = "", include_dirs: tuple[Path, ...] = ()) -> Path:
    """Compile the plugin if this source/wheel combination has not been compiled yet (~10 s)."""
    out = path(source, name, versions)
    if out.is_file():
        return out
    tvm_dir, ffi_dir = package_dir("tvm"), package_dir("tvm_ffi")
    if not (tvm_dir / "include" / "tvm" / "runtime" / "device_api.h").is_file():
        raise ParamsError(f"{tvm_dir}: no TVM headers (a runtime-only install?); build the {name} plugin where the "
                          f"apache-tvm wheel is installed and point MLCGEN_PLUGIN_CACHE at it")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise ParamsError(f"building the {name} plugin needs a C++17 compiler (Debian: apt-get install g++)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-o", str(tmp_out), str(source),
               f"-I{tvm_dir / 'include'}", f"-I{ffi_dir / 'include'}", *(f"-I{d}" for d in include_dirs),
               f"-L{tvm_dir / 'lib'}", f"-L{ffi_dir / 'lib'}", "-ltvm_runtime", "-ltvm_ffi", "-ldl"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise ParamsError(f"compiling the {name} plugin failed ({' '.join(cmd)}):\n{result.stderr[-4000:]}")
        tmp_out.rename(out)  # atomic: a concurrent loader never sees half a file
    return out


def load_global(library: Path) -> None:
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def carry(folder: Path, *built: Path) -> None:
    """Copy built plugins to folder/plugins, for a machine whose runtime-only TVM has no headers
    to build them (the GPU machine): use_carried(folder) there."""
    (folder / "plugins").mkdir(parents=True, exist_ok=True)
    for plugin in built:
        shutil.copy2(plugin, folder / "plugins" / plugin.name)


def use_carried(folder: Path) -> None:
    global CACHE
    CACHE = Path(os.environ.get("MLCGEN_PLUGIN_CACHE", folder / "plugins"))
