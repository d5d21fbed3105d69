"""Whole decode steps as CUDA graphs, captured by the engine (CUDA driver API through ctypes).

A CUDA build's decode is ~900 small kernels, a third of them launched by TVM's KV cache between
the model's own kernels; TVM's RewriteCUDAGraph can capture only the runs between those KV-cache
calls, and the GPU idled ~15% of a 7B step at the hand-overs. Here the engine captures the step
whole (embed, decode, and for greedy decoding the argmax and its copy into the next step's input)
on a stream of its own and replays it with one launch.

What the capture cannot hold: the KV cache's per-step host work. begin_forward and end_forward
run on the host every step as before, and the cache's auxiliary arrays (page table, positions,
lengths) are copied to the device before each replay, outside the graph, by asking the cache for
its query positions (TVM copies them lazily at the step's first attention call, on a copy stream
of its own). Their device addresses and the kernels' launch arguments change only with the
sequence's page count (TVM's paged_kv_cache.cc: view offsets and `nnz_pages`), so a step is
captured once per page count, every PAGE tokens, and replayed in between.

Ordering: TVM's launches outside the graph, the cache's copies and `Tensor.numpy()` run on the
legacy default stream (the cache's copy stream is a blocking stream: its copy waits for the legacy
stream's earlier work, and the legacy stream then waits for the copy). Our stream is non-blocking,
so it joins the legacy stream through events in both directions around each replay.
"""

from __future__ import annotations

import ctypes

LEGACY = ctypes.c_void_p(0)  # the legacy default stream: what TVM launches on when no stream is set
NON_BLOCKING, NO_TIMING, RELAXED = 1, 2, 2  # CU_STREAM_NON_BLOCKING, CU_EVENT_DISABLE_TIMING, CU_STREAM_CAPTURE_MODE_RELAXED


class Driver:
    """The few CUDA driver calls used here, each checked."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")  # installed with the NVIDIA driver wherever CUDA runs

    def __call__(self, name: str, *args) -> None:
        result = getattr(self.lib, name)(*args)
        if result:
            text = ctypes.c_char_p()
            self.lib.cuGetErrorString(result, ctypes.byref(text))
            raise RuntimeError(f"CUDA {name} failed: {(text.value or b'?').decode()} ({result})")

    def new(self, name: str, *args) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self(name, ctypes.byref(handle), *args)
        return handle


class DecodeGraphs:
    """Decode steps of one engine, each a replay of the graph captured for the current page count."""

    def __init__(self, engine, page_size: int):
        self.engine, self.page_size, self.cu = engine, page_size, Driver()
        self.stream = self.cu.new("cuStreamCreate", ctypes.c_uint(NON_BLOCKING))
        self.ours_done = self.cu.new("cuEventCreate", ctypes.c_uint(NO_TIMING))
        self.legacy_done = self.cu.new("cuEventCreate", ctypes.c_uint(NO_TIMING))
        self.graphs = {}  # greedy: (page count, graph exec, output tensor); only the current page count's
        self.host_token = self.cu.new("cuMemAllocHost_v2", ctypes.c_size_t(4))  # a greedy step's token, read back
        self.token_read = self.cu.new("cuEventCreate", ctypes.c_uint(NO_TIMING))
        self.warm = False  # whether a step has run eagerly: the VM's first allocations, module loads

    def logits(self):
        """One step from the engine's token tensor: the logits tensor (ordered for the legacy stream)."""
        return self._replay(greedy=False)

    def greedy(self) -> int:
        """One greedy step from the engine's token tensor, which then holds the step's token (the
        next step's input); the token, read back before the next step is issued. With the host a
        step ahead (issuing step t + 1 before reading step t's token) the first replay after a
        recapture now and then gave another token than decode + argmax on the host (cuda_check.py,
        docs/benchmarks.md; cause not found), so the host waits here."""
        self._replay(greedy=True)
        self.cu("cuMemcpyDtoHAsync_v2", self.host_token, ctypes.c_uint64(self.engine._token.data_ptr()), ctypes.c_size_t(4),
                self.stream)
        self.cu("cuEventRecord", self.token_read, self.stream)
        self.cu("cuEventSynchronize", self.token_read)
        return int(ctypes.c_int32.from_address(self.host_token.value).value)

    def _replay(self, greedy: bool):
        from .engine import _builtin

        e = self.engine
        pages = e.length // self.page_size + 1  # after this step's token
        self._begin_forward()
        entry = self.graphs.get(greedy)
        if entry is None or entry[0] != pages:
            if entry is not None:
                self.cu("cuGraphExecDestroy", entry[1])
            entry = self.graphs[greedy] = (pages, *self._capture(greedy))
        self.cu("cuGraphLaunch", entry[1], self.stream)
        self._join(self.stream, LEGACY, self.ours_done)  # the step's results for the legacy stream
        _builtin("kv_state_end_forward")(e.cache)
        e.length += 1
        return entry[2]

    def _begin_forward(self) -> None:
        """begin_forward for one token, and the cache's auxiliary arrays to the device now, after
        the last replay has read them and before the next one."""
        from tvm.runtime import ShapeTuple

        from .engine import _builtin

        e = self.engine
        # The cache packs the arrays into one page-locked host buffer and copies it from there: the
        # last step's copy must be done before the host writes this step's (legacy_done follows it).
        self.cu("cuEventSynchronize", self.legacy_done)
        self._join(self.stream, LEGACY, self.ours_done)
        _builtin("kv_state_begin_forward")(e.cache, ShapeTuple([e.SEQ_ID]), ShapeTuple([1]))
        _builtin("attention_kv_cache_get_query_positions")(e.cache)
        self._join(LEGACY, self.stream, self.legacy_done)

    def _join(self, first, then, event) -> None:
        """Work issued on `then` from now on waits for what `first` holds now."""
        self.cu("cuEventRecord", event, first)
        self.cu("cuStreamWaitEvent", then, event, ctypes.c_uint(0))

    def _capture(self, greedy: bool):
        """(graph exec, output tensor) of one step, captured on our stream with TVM's launches
        directed to it; the first time, the step runs once eagerly first (the VM's first
        allocations and module loads), then is taken back out of the cache."""
        import tvm_ffi

        from .engine import _builtin

        e = self.engine
        if not self.warm:
            given = e._token.numpy()
            self._run_body(greedy, LEGACY)
            e._token.copyfrom(given)
            _builtin("kv_state_end_forward")(e.cache)
            _builtin("kv_state_popn")(e.cache, e.SEQ_ID, 1)
            self._begin_forward()
            self.warm = True
        self.cu("cuStreamBeginCapture_v2", self.stream, ctypes.c_int(RELAXED))
        try:
            with tvm_ffi.use_raw_stream(e.device, self.stream.value):
                out = self._run_body(greedy, self.stream)
        finally:
            graph = ctypes.c_void_p()
            self.cu("cuStreamEndCapture", self.stream, ctypes.byref(graph))
        try:
            graph_exec = self.cu.new("cuGraphInstantiateWithFlags", graph, ctypes.c_ulonglong(0))
        finally:
            self.cu("cuGraphDestroy", graph)
        return graph_exec, out

    def _run_body(self, greedy: bool, stream):
        """embed + decode (+ the argmax, copied into the token tensor on `stream`, where TVM
        launches) from the engine's token tensor."""
        e = self.engine
        embed = e._entries["embed"](e._token, e.params)._create_view((1, 1, e.hidden_size))
        logits, _ = e._entries["decode"](embed, e.cache, e.params)
        if not greedy:
            return logits
        token = e.vm["greedy"](logits)
        self.cu("cuMemcpyDtoDAsync_v2", ctypes.c_uint64(e._token.data_ptr()), ctypes.c_uint64(token.data_ptr()),
                ctypes.c_size_t(4), stream)
        return token
