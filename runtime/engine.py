"""A minimal single-sequence engine over a built model folder: load, prefill, decode.

Needs only the TVM runtime. Before anything runs it checks that the library, the manifest and the
params agree, and that every shard is intact.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import cache
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm.runtime.vm import VirtualMachine

from ..errors import ParamsError
from . import dist, tensor_cache
from .kv_cache import KVCache
from .sampling import UNIFORMS, Sampler

# "vulkan" libraries hold WGSL kernels that our wgpu plugin runs (runtime/vulkan.py); TVM knows
# their device as webgpu.
DEVICES = {"cpu": tvm.cpu, "cuda": tvm.cuda, "rocm": tvm.rocm, "vulkan": lambda i: tvm.device("webgpu", i)}


@cache
def _builtin(name: str):
    return tvm.get_global_func(f"vm.builtin.{name}")


class Engine:
    """One conversation's KV cache on one device.

    >>> engine = Engine("dist/tiny-q4f16_1-cpu")
    >>> logits = engine.prefill([1, 15043])   # numpy [vocab], float32, for the last token
    >>> logits = engine.decode(int(logits.argmax()))
    """

    def __init__(self, dist_dir, device: str = "auto", verify_shards: bool = True, random_weights: bool = False):
        """random_weights: generate params of the right shapes/dtypes instead of loading them, to
        benchmark a library whose real weights are not here."""
        self.dist_dir = Path(dist_dir)
        self.manifest = dist.read_manifest(self.dist_dir)
        self.device = self._device(device)
        lib_path = self.dist_dir / dist.LIBRARY
        if not lib_path.is_file():
            raise ParamsError(f"{lib_path}: missing; rebuild with `mlcgen build`")
        self.prefill_entry = self._prefill_entry()  # before the VM, which resolves the library's functions
        self.vm = VirtualMachine(tvm.runtime.load_module(str(lib_path)), self.device)
        self._check_library(lib_path)
        # One FFI array for every call: a Python list would be converted (hundreds of tensors) per call.
        self.params = tvm_ffi.convert(self._random_params() if random_weights else self._load_params(verify_shards))
        self._entries = {name: self.vm[name] for name in {"embed", "prefill", "decode", self.prefill_entry}}
        self._token = tvm.runtime.empty((1,), "int32", self.device)  # decode's input, reused every step
        # sample_stream's: the sample entry's config, table of uniform numbers and step in it
        self._sample_state = (tvm.runtime.empty((2,), "float32", self.device), tvm.runtime.empty((UNIFORMS,), "float32", self.device),
                              tvm.runtime.empty((1,), "int32", self.device))
        self.context_window = self.manifest["context_window"]
        self.prefill_chunk = self.manifest["prefill_chunk"]
        self.hidden_size = self.manifest["model"]["config"]["hidden_size"]
        self.sliding_window = self.manifest["model"]["config"].get("sliding_window")
        self.cache = KVCache(self.manifest, self.device)
        self.length = 0  # tokens in the KV cache
        self._graphs = self._decode_graphs()  # CUDA: each decode step one graph replay
        # Top-p on the device where there is one: on the CPU the entry's kernels run serially and
        # numpy's draw from the logits is faster (tiny model: 754 against 1000 tok/s).
        self.samples_on_device = self.manifest["target"]["device"] != "cpu" and self.has_entry("sample")

    def _prefill_entry(self) -> str:
        """The entry prefills run: the manifest's vendor-library entry (CUDA: cuBLAS) once its
        library is loaded, else `prefill` (the compiled kernels; a warning where the library is
        missing here: slower, same result). The cuBLAS entry is faster at every prompt length
        measured (docs/benchmarks.md), so it takes every prefill."""
        entry = self.manifest["target"].get("library_prefill")
        if not entry:
            return "prefill"
        from . import cublas  # the one vendor library so far

        try:
            cublas.load()
        except ParamsError as e:
            warnings.warn(f"{self.dist_dir}: prefills use the compiled kernels: {e}", stacklevel=3)
            return "prefill"
        return entry

    def _decode_graphs(self):
        """Whole decode steps as CUDA graphs (runtime/cuda_graph.py) where the library is built for
        them (manifest target `decode_graphs`), else None: each step's kernels launched one by one."""
        if self.manifest["target"].get("decode_graphs") != "whole_step":
            return None
        if self.sliding_window:
            # Graphs are keyed by the sequence's page count; the window's page table also moves
            # with the window's start, which that key does not follow (not tested on a GPU), so
            # such models decode with eager launches.
            return None
        from . import cuda_graph

        try:
            return cuda_graph.DecodeGraphs(self, self.manifest["page_size"])
        except (OSError, AttributeError, RuntimeError) as e:  # no libcuda.so.1, or too old a driver
            warnings.warn(f"{self.dist_dir}: decode launches its kernels one by one (slower): {e}", stacklevel=3)
            return None

    def _device(self, name: str):
        want = self.manifest["target"]["device"]
        name = want if name == "auto" else name
        if name not in DEVICES:
            raise ParamsError(f"unknown device {name!r}; choose one of: auto, {', '.join(DEVICES)}")
        if name != want:
            raise ParamsError(f"{self.dist_dir}: built for target {self.manifest['target']['name']} (device {want!r}), cannot run on device {name!r}")
        if name == "cuda":
            from . import cuda  # kernels are compiled (once, cached) when the library loads

            cuda.enable()
        if name == "vulkan":
            from . import vulkan  # builds (once, cached) and loads the wgpu device plugin

            vulkan.check_device(self.manifest, self.dist_dir)
        device = DEVICES[name](0)
        if not device.exist:
            raise ParamsError(f"no {name} device is visible to the TVM runtime on this machine")
        return device

    def _check_library(self, lib_path: Path) -> None:
        in_lib = json.loads(str(self.vm["_metadata"]()))
        expected = dist.library_manifest(self.manifest)
        if in_lib != expected:
            first = ["model", "quantization", "target", "params"]  # the most telling differences first
            keys = first + sorted((set(in_lib) | set(expected)) - set(first))
            key = next(k for k in keys if in_lib.get(k) != expected.get(k))
            raise ParamsError(
                f"{lib_path} does not belong to the params in {self.dist_dir}: '{key}' differs "
                f"(library: {_brief(in_lib.get(key))}; {dist.MANIFEST}: {_brief(expected.get(key))})"
            )

    def _load_params(self, verify: bool) -> list:
        index = tensor_cache.read_index(self.dist_dir)
        records = tensor_cache.param_records(index)
        for p in self.manifest["params"]:
            r = records.get(p["name"])
            if r is None:
                raise ParamsError(f"{self.dist_dir / tensor_cache.INDEX}: param {p['name']} is missing")
            if r["shape"] != p["shape"] or r["dtype"] != p["dtype"]:
                raise ParamsError(f"{self.dist_dir / tensor_cache.INDEX}: param {p['name']} is {r['dtype']}{r['shape']}, the manifest says {p['dtype']}{p['shape']}")
        if verify:
            tensor_cache.verify_shards(self.dist_dir, index)
        # The tensor cache is process-global: load, take our arrays out by name, and clear it.
        _builtin("tensor_cache.load")(str(self.dist_dir), self.device.dlpack_device_type(), self.device.index)
        try:
            return _builtin("param_array_from_cache_by_name")([p["name"] for p in self.manifest["params"]])
        finally:
            _builtin("tensor_cache.clear")()

    def _random_params(self) -> list:
        rng = np.random.default_rng(0)
        arrays = []
        for p in self.manifest["params"]:
            shape, dtype = p["shape"], np.dtype(p["dtype"])
            if dtype.kind == "u":  # packed 4-bit codes: any bits are valid
                a = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
            elif len(shape) == 1:  # norm weights and biases: keep activations in range
                a = np.ones(shape, dtype)
            else:  # weights, and q4 scales: small enough that nothing overflows fp16
                a = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)
            arrays.append(tvm.runtime.tensor(a, self.device))
        return arrays

    def pop(self, n: int) -> None:
        """Forget the last n tokens of the KV cache (to reuse a common prefix)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot pop {n} tokens from a cache holding {self.length}")
        self.length -= n  # the rows stay in the pages until overwritten

    def reset(self) -> None:
        self.length = 0

    def prefill(self, token_ids) -> np.ndarray:
        """Append tokens (in chunks of at most prefill_chunk); logits of the last one."""
        ids = np.asarray(token_ids, dtype=np.int32).reshape(-1)
        if ids.size == 0:
            raise ValueError("prefill needs at least one token")
        self._check_ids(ids)
        self._check_room(ids.size)
        start = 0
        while start < ids.size:
            chunk = ids[start : start + self._chunk_size()]
            # one token: the decode entry (the only one whose attention a sliding window limits)
            logits = self._forward(self.prefill_entry if chunk.size > 1 else "decode", tvm.runtime.tensor(chunk, self.device))
            start += chunk.size
        return logits

    def _chunk_size(self) -> int:
        if not self.sliding_window:
            return self.prefill_chunk
        # The prefill entry has no window: a chunk is exact while the whole sequence still fits
        # in the window, and past it one token at a time goes through decode.
        return max(1, min(self.prefill_chunk, self.sliding_window - self.length))

    def decode(self, token_id: int) -> np.ndarray:
        """Append one token; its logits."""
        ids = np.array([token_id], dtype=np.int32)
        self._check_ids(ids)
        self._check_room(1)
        self._token.copyfrom(ids)
        if self._graphs:
            return self._graphs.logits().numpy().reshape(-1)
        return self._forward("decode", self._token)

    def decode_greedy(self, token_id: int, steps: int, stop_ids=()) -> list[int]:
        """Greedy decoding: append `token_id`, then each next token (argmax of the logits) up to
        `steps` tokens or one in `stop_ids` (returned, not appended), as decode + argmax on the host
        would (greedy_stream)."""
        out = []
        with closing(self.greedy_stream(token_id, steps)) as stream:
            for token in stream:
                out.append(token)
                if token in stop_ids:
                    break
        return out

    def greedy_stream(self, token_id: int, max_tokens: int | None = None) -> Iterator[int]:
        """Greedy decoding as a stream: append `token_id`, then yield each next token (argmax of the
        logits), at most max_tokens. The argmax runs on the device and feeds the next step's
        embedding there: no logits cross to the host, and the host issues each step before it reads
        the previous step's token back (on CUDA, once the previous step has finished: the copy of
        the KV-cache tables waits for it, kv_step). The cache holds what decode + argmax on the host would:
        every token yielded but the last one; the step issued ahead is popped again when the caller
        closes the stream (break in a `with closing(...)` block, or close())."""
        return self._device_stream(token_id, max_tokens, None)

    def sample_stream(self, token_id: int, sampler: Sampler, max_tokens: int | None = None) -> Iterator[int]:
        """Top-p sampling as a stream, drawn on the device (the `sample` entry: compiler/sampling.py)
        from one uniform number a step, taken from the sampler's generator UNIFORMS at a time;
        otherwise as greedy_stream. The sampler's config must be one the device draws
        (GenerationConfig.samples_on_device)."""
        if not sampler.config.samples_on_device():
            raise ValueError(f"the device draws top-p samples without top_k or penalties, not {sampler.config}")
        return self._device_stream(token_id, max_tokens, sampler)

    def _device_stream(self, token_id: int, max_tokens: int | None, sampler: Sampler | None) -> Iterator[int]:
        """Decode steps whose next token the device picks (the `sample` entry with a sampler, else
        `greedy`), the host a step ahead."""
        head = "sample" if sampler else "greedy"
        self._check_ids(np.array([token_id]))
        if not self.has_entry(head):
            raise ParamsError(f"{self.dist_dir}: the library has no `{head}` entry (built by an older mlcgen); "
                              "rebuild it with `mlcgen build`")
        pick = self.vm[head]
        self._token.copyfrom(np.array([token_id], dtype=np.int32))
        if sampler:
            config, uniforms, step = self._sample_state
            config.copyfrom(sampler.device_config())
            step.copyfrom(np.zeros(1, np.int32))
        fed, pending, given = self._token, [], 0  # pending: functions reading a step's token back
        start = self.length
        try:
            while max_tokens is None or given + len(pending) < max_tokens:
                if self.length + 1 > self.context_window:
                    break
                if sampler and (self.length - start) % UNIFORMS == 0:
                    # Uploads are ordered after the work issued before them (the step in flight
                    # reads the old table); one a step slowed Vulkan's sampled decode by a fifth.
                    uniforms.copyfrom(sampler.uniforms())
                if self._graphs:
                    pending.append(self._graphs.step(head))
                else:
                    logits = self._run("decode", fed)
                    fed = pick(logits, *self._sample_state) if sampler else pick(logits)  # the step's token, on the device
                    pending.append(self._read_token_later(fed))
                if len(pending) == 2:
                    given += 1
                    yield pending.pop(0)()
            while pending:
                given += 1
                yield pending.pop(0)()
        finally:
            for read in pending:  # read-backs not taken: release them
                read()
            self.pop(self.length - start - given)  # the cache holds token_id and every token yielded but the last

    def has_entry(self, name: str) -> bool:
        try:
            self.vm[name]
        except AttributeError:
            return False
        return True

    def _check_ids(self, ids: np.ndarray) -> None:
        vocab = self.manifest["model"]["config"]["vocab_size"]
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.size:  # the kernels gather embedding rows unchecked
            raise ValueError(f"token id {int(bad[0])} is outside the vocabulary (0..{vocab - 1})")

    def _check_room(self, n: int) -> None:
        if self.length + n > self.context_window:
            raise ValueError(f"context window exceeded: {self.length} tokens in the cache + {n} new > {self.context_window}")

    def _forward(self, entry: str, ids) -> np.ndarray:
        return self._run(entry, ids).numpy().reshape(-1)

    def _read_token_later(self, token) -> Callable[[], int]:
        """A function reading a one-token device tensor back. On Vulkan the copy is ordered now and
        the wait covers it alone: reading step t's token does not wait for step t + 1, which keeps
        the GPU busy while the host records step t + 2."""
        if self.manifest["target"]["device"] == "vulkan":
            from . import vulkan

            read = vulkan.read_later(token)
            return lambda: int(read()[0])
        return lambda: int(token.numpy()[0])

    def _run(self, entry: str, ids):
        """ids: int32 token ids on the device; the last token's logits [1, 1, vocab], on the device
        (nothing waits for the device here)."""
        n = ids.shape[0]
        embed = self._entries["embed"](ids, self.params)._create_view((1, n, self.hidden_size))
        logits = self._entries[entry](embed, *self.kv_step(n), self.params)
        self.length += n
        return logits

    def kv_step(self, n: int) -> list:
        """The KV cache's pages and tables for a forward of n tokens, the tables written to the
        device now. Their copy is ordered after the steps issued before it (on the legacy stream
        on CUDA, where graph replays join it: cuda_graph.py), so it cannot overwrite the tables
        under a step still running."""
        return self.cache.forward_args(self.length, n)


def _brief(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 160 else text[:157] + "..."
