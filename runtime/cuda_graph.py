"""Whole decode steps as CUDA graphs, captured by the engine (CUDA driver API through ctypes).

A CUDA build's decode is ~900 small kernels, a third of them launched by TVM's KV cache between
the model's own kernels; TVM's RewriteCUDAGraph can capture only the runs between those KV-cache
calls, and the GPU idled ~15% of a 7B step at the hand-overs. Here the engine captures the step
whole (embed, decode, and for greedy or sampled decoding the next token's kernels and its copy
into the next step's input) on a stream of its own and replays it with one launch.

What the capture cannot hold: the KV cache's tables (page table, positions, lengths), which the
engine copies to the device before each replay, outside the graph (runtime/kv_cache.py). Their
device addresses are fixed; the kernels' launch arguments change only with the sequence's page
count (the page table's length: the decode attention's split count), so a step is captured once
per page count, every page_size tokens, and replayed in between.

Ordering. The tables are copied on the legacy default stream, and our stream joins the legacy
stream by events both ways around each replay, so the copy waits for the last replay (which
reads the tables it overwrites: greedy tokens would differ from decode + host argmax otherwise,
benchmarks/decode_graphs.py), and TVM's eager work (prefill, logits to the host) stays in order.
TVM's copy from host memory also waits on the host for the stream; a capture, which comes after
the copy, so also waits for the last replay: ~1 ms of host time every page_size tokens.
"""

from __future__ import annotations

import ctypes
import time

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
        self.joined = self.cu.new("cuEventCreate", ctypes.c_uint(NO_TIMING))
        self.graphs = {}  # head (None: logits): (page count, graph exec, output tensor); only the current page count's
        self.captures, self.capture_seconds = 0, 0.0  # host time to record steps and update or instantiate their graphs
        # A step's token is read back through one of two page-locked words: the host reads
        # step t's while step t + 1 runs.
        self.host_tokens = self.cu.new("cuMemAllocHost_v2", ctypes.c_size_t(8))
        self.token_copied = [self.cu.new("cuEventCreate", ctypes.c_uint(NO_TIMING)) for _ in range(2)]
        self.steps = 0
        self.warm = False  # whether a step has run eagerly: the VM's first allocations, module loads
        self.can_update = hasattr(self.cu.lib, "cuGraphExecUpdate_v2")  # CUDA 12 drivers; older ones instantiate

    def __del__(self):
        """The driver objects go with the engine (an app may load several engines in turn)."""
        try:
            self.cu("cuStreamSynchronize", self.stream)
            for _, graph_exec, _ in self.graphs.values():
                self.cu("cuGraphExecDestroy", graph_exec)
            for event in (self.joined, *self.token_copied):
                self.cu("cuEventDestroy_v2", event)
            self.cu("cuStreamDestroy_v2", self.stream)
            self.cu("cuMemFreeHost", self.host_tokens)
        except (AttributeError, OSError, RuntimeError):  # half-built, or at interpreter exit
            pass

    def logits(self):
        """One step from the engine's token tensor: its logits tensor, ordered for the legacy stream."""
        return self._replay(None)

    def step(self, head: str):
        """One step from the engine's token tensor whose next token `head` picks (the greedy or
        sample entry), which then holds that token (the next step's input); returns a function
        that reads the token back (call it before the step after next is issued)."""
        self._replay(head)
        slot = self.steps % 2
        self.steps += 1
        self.cu("cuMemcpyDtoHAsync_v2", ctypes.c_void_p(self.host_tokens.value + 4 * slot),
                ctypes.c_uint64(self.engine._token.data_ptr()), ctypes.c_size_t(4), self.stream)
        self.cu("cuEventRecord", self.token_copied[slot], self.stream)

        def read() -> int:
            self.cu("cuEventSynchronize", self.token_copied[slot])
            return int(ctypes.c_int32.from_address(self.host_tokens.value + 4 * slot).value)

        return read

    def _replay(self, head: str | None):
        e = self.engine
        pages = e.length // self.page_size + 1  # after this step's token
        kv = e.kv_step(1)  # the tables to the device, after the last replay (the legacy stream)
        self._join(LEGACY, self.stream)  # ... and after any eager work before this step
        entry = self.graphs.get(head)
        if entry is None or entry[0] != pages:
            start = time.perf_counter()
            entry = self.graphs[head] = (pages, *self._capture(head, kv, entry[1] if entry else None))
            self.captures += 1
            self.capture_seconds += time.perf_counter() - start
        self.cu("cuGraphLaunch", entry[1], self.stream)
        self._join(self.stream, LEGACY)  # the step's results, and every later copy, for the legacy stream
        e.length += 1
        return entry[2]

    def _join(self, first, then) -> None:
        """Work issued on `then` from now on waits for what `first` holds now."""
        self.cu("cuEventRecord", self.joined, first)
        self.cu("cuStreamWaitEvent", then, self.joined, ctypes.c_uint(0))

    def _capture(self, head: str | None, kv: list, graph_exec):
        """(graph exec, output tensor) of one step, captured on our stream with TVM's launches
        directed to it; the first time, the step runs once eagerly first (the VM's first
        allocations and module loads). A page count's graph differs from the last one's only in
        kernel arguments, so it updates the last one's executable graph in place, which is cheaper
        than instantiating one (an instantiation where the update is refused)."""
        import tvm_ffi

        e = self.engine
        if not self.warm:  # (restoring what the step changes: its input token, the sample entry's step)
            given, step = e._token.numpy(), e._sample_state[2].numpy()
            self._run_body(head, kv, LEGACY)
            e._token.copyfrom(given)
            e._sample_state[2].copyfrom(step)
            e.device.sync()
            self.warm = True
        self.cu("cuStreamBeginCapture_v2", self.stream, ctypes.c_int(RELAXED))
        try:
            with tvm_ffi.use_raw_stream(e.device, self.stream.value):
                out = self._run_body(head, kv, self.stream)
        finally:
            graph = ctypes.c_void_p()
            self.cu("cuStreamEndCapture", self.stream, ctypes.byref(graph))
        try:
            if graph_exec is not None:
                info = (ctypes.c_byte * 24)()  # CUgraphExecUpdateResultInfo: the result and two nodes
                if self.can_update and self.cu.lib.cuGraphExecUpdate_v2(graph_exec, graph, info) == 0:
                    return graph_exec, out
                self.cu("cuGraphExecDestroy", graph_exec)
            graph_exec = self.cu.new("cuGraphInstantiateWithFlags", graph, ctypes.c_ulonglong(0))
        finally:
            self.cu("cuGraphDestroy", graph)
        return graph_exec, out

    def _run_body(self, head: str | None, kv: list, stream):
        """embed + decode (+ the next token from `head`, copied into the token tensor on `stream`,
        where TVM launches) from the engine's token tensor."""
        e = self.engine
        embed = e._entries["embed"](e._token, e.params)._create_view((1, 1, e.hidden_size))
        logits = e._entries["decode"](embed, *kv, e.params)
        if head is None:
            return logits
        token = e.vm[head](logits, *e._sample_state) if head == "sample" else e.vm[head](logits)
        self.cu("cuMemcpyDtoDAsync_v2", ctypes.c_uint64(e._token.data_ptr()), ctypes.c_uint64(token.data_ptr()),
                ctypes.c_size_t(4), stream)
        return token
