"""Running Vulkan-target libraries: WGSL kernels through wgpu's Vulkan backend.

The TVM wheel has neither a Vulkan runtime nor a WebGPU one outside the browser, so this project
ships its own device plugin (runtime/wgpu/plugin.cc, compiled on first use: runtime/plugins.py);
loading it registers the runtime's `webgpu` device and module loader.
"""

from __future__ import annotations

import importlib.metadata as md
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from ..errors import ParamsError
from . import plugins

SOURCE = Path(__file__).parent / "wgpu" / "plugin.cc"
NAME = "mlcgen_wgpu"


def wgpu_library() -> Path:
    """wgpu-native, as shipped inside the `wgpu` wheel."""
    return plugins.package_dir("wgpu") / "resources" / "libwgpu_native-release.so"


def plugin_path() -> Path:
    return plugins.path(SOURCE, NAME, md.version("wgpu"))


def build_plugin() -> Path:
    return plugins.build(SOURCE, NAME, md.version("wgpu"), include_dirs=(wgpu_library().parent,))


@cache
def load() -> None:
    """Register the `webgpu` device and module loader with the TVM runtime (once per process)."""
    import tvm  # noqa: F401  (loads libtvm_runtime / libtvm_ffi, which the plugin links against)

    plugins.load_global(wgpu_library())
    plugins.load_global(build_plugin())


def adapter() -> dict:
    """Facts about the Vulkan adapter wgpu picks: name, features, limits, memory heaps. Raises
    ParamsError with what to install when there is no Vulkan driver."""
    import tvm_ffi

    load()
    facts = {k: (v if not isinstance(v, str) else str(v)) for k, v in tvm_ffi.get_global_func("mlcgen.wgpu.adapter")().items()}
    if facts["error"]:
        raise ParamsError(facts["error"])
    return facts


def counters() -> dict:
    """Bytes allocated (now, peak), kernels dispatched, submissions made, host time blocked on the
    GPU (wait_ns) and wide-load views bound (wide_load_views, plugin.cc WideLoads) so far."""
    import tvm_ffi

    load()
    return dict(tvm_ffi.get_global_func("mlcgen.wgpu.counters")().items())


def read_later(tensor):
    """Copy a device tensor to the host in queue order now; returns a function that waits for that
    copy alone (not for work issued after it) and gives the numpy array."""
    import numpy as np
    import tvm_ffi

    load()
    read = tvm_ffi.get_global_func("mlcgen.wgpu.read_later")(tensor)
    shape, dtype = tuple(tensor.shape), tensor.dtype
    return lambda: np.frombuffer(tvm_ffi.get_global_func("mlcgen.wgpu.wait_read")(read), dtype).reshape(shape)


@contextmanager
def kernel_profile(per_pass: bool = False):
    """Per-kernel GPU time of the work run inside the block, from timestamps the plugin writes after
    every dispatch: yields a dict that is filled on exit with {kernel name: (seconds, calls)}.
    Each submission is waited for while profiling, so time the block itself only without it.
    A timestamp costs the GPU a few us (~4.7 on NVIDIA): with `per_pass`, for a block that calls
    one kernel many times, stamps go only around each compute pass."""
    import tvm_ffi

    load()
    switch = tvm_ffi.get_global_func("mlcgen.wgpu.profile")
    times: dict[str, tuple[float, int]] = {}
    switch(True, per_pass)
    try:
        yield times
    finally:
        switch(False, False)
        times.update({str(k): (v[0] / 1e9, int(v[1])) for k, v in tvm_ffi.get_global_func("mlcgen.wgpu.kernel_times")().items()})


GIB = 2**30


def usable_memory(facts: dict) -> int:
    """Bytes the adapter can hold: its device-local heaps on a discrete GPU; every heap on an
    integrated GPU or CPU adapter, whose "device" memory is the system's (the Steam Deck's 16 GB)."""
    unified = facts["adapter_type"] in ("integrated", "cpu")
    return facts["all_heaps_bytes"] if unified else facts["device_local_heap_bytes"]


def fit_report(manifest: dict, available: int) -> str | None:
    """None when weights + KV cache + temporaries fit in `available` bytes, else what does fit."""
    from . import dist

    mem = manifest["memory"]
    if mem["total_bytes"] <= available:
        return None
    fixed = mem["params_bytes"] + mem["temporary_bytes"]
    need = (f"{mem['total_bytes'] / GIB:.2f} GiB (weights {mem['params_bytes'] / GIB:.2f} + KV cache "
            f"{mem['kv_cache_bytes'] / GIB:.2f} for {manifest['context_window']} tokens + temporaries "
            f"{mem['temporary_bytes'] / GIB:.2f}), the adapter offers {available / GIB:.2f} GiB")
    if fixed >= available:
        return f"the model needs {need}: its weights alone do not fit; use a smaller model"
    fits = dist.context_window_that_fits(manifest, available - fixed)
    if not fits:
        return f"the model needs {need}: its weights fit, but not a KV cache of {manifest['page_size']} tokens; use a smaller model"
    return f"the model needs {need}: rebuild with --context-window {fits} or less (the largest that fits)"


def subgroups_are(facts: dict, width: int) -> bool:
    """Whether every subgroup is `width` lanes: the default width, and the driver may not pick
    another (size control, when reported, spans only that width)."""
    control = (facts["subgroup_min_size"], facts["subgroup_max_size"])
    return facts["subgroups"] and facts["subgroup_size"] == width and control in ((0, 0), (width, width))


def describe_subgroups(facts: dict) -> str:
    if not facts["subgroups"]:
        return "no subgroups"
    return f"subgroups of {facts['subgroup_size']} (the driver may choose {facts['subgroup_min_size']}-{facts['subgroup_max_size']})"


def check_bindings(manifest: dict, facts: dict, dist_dir) -> None:
    """A kernel sees each tensor through one storage-buffer binding, so no param may be larger
    than the adapter's binding limit (128 MiB on lavapipe; 2 GiB on NVIDIA). Vulkan builds store
    larger weights in row chunks (targets/vulkan.py MAX_PARAM_BYTES); this catches other builds."""
    from . import dist

    limit = facts["max_storage_buffer_binding_size"]
    for p in manifest["params"]:
        nbytes = dist.param_bytes(p)
        if nbytes > limit:
            raise ParamsError(f"{dist_dir}: param {p['name']} is {nbytes / 2**20:.0f} MiB; {facts['name']} binds at most "
                              f"{limit / 2**20:.0f} MiB per buffer (maxStorageBufferBindingSize). Rebuild with "
                              "`mlcgen build --target vulkan`, which stores weights past 128 MiB in row chunks")


def check_device(manifest: dict, dist_dir) -> dict:
    """Load the plugin and check, before any weight is loaded, that the adapter can run this
    library: subgroups of the width it was compiled for, workgroup limits, bindings, memory."""
    facts, target = adapter(), manifest["target"]
    width = target.get("subgroup_size", 0)
    if width and not subgroups_are(facts, width):
        raise ParamsError(f"{dist_dir}: built for {target['name']}, whose kernels assume subgroups of exactly "
                          f"{width} lanes; {facts['name']} has {describe_subgroups(facts)}: rebuild with --target vulkan")
    for need, have, what in ((target.get("workgroup_bytes", 0), facts["max_workgroup_storage_size"], "bytes of workgroup memory"),
                             (target.get("max_threads", 0), facts["max_invocations_per_workgroup"], "invocations per workgroup")):
        if need > have:
            raise ParamsError(f"{dist_dir}: built for {target['name']}, whose kernels use up to {need} {what}; "
                              f"{facts['name']} offers {have}: rebuild with --target vulkan")
    check_bindings(manifest, facts, dist_dir)
    report = fit_report(manifest, usable_memory(facts))
    if report:
        raise ParamsError(f"{dist_dir}: does not fit on {facts['name']}: {report}")
    return facts
