"""The engine's side of the KV cache (compiler/kv_cache.py): the pages of one sequence, and the
tables each prefill or decode forward reads, written to the device before it in one copy."""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi

from . import dist


class KVCache:
    def __init__(self, manifest: dict, device):
        cfg = manifest["model"]["config"]
        self.page_size = manifest["page_size"]
        self.window = cfg.get("sliding_window")
        pages = dist.kv_cache_pages(manifest)
        shape = (pages, 2, cfg["num_key_value_heads"], self.page_size, cfg["head_dim"])
        # One FFI array for every call: a Python list would be converted per call.
        self.pages = tvm_ffi.convert([tvm.runtime.empty(shape, manifest["model_dtype"], device) for _ in range(cfg["num_hidden_layers"])])
        self.page_ids = tvm.runtime.tensor(np.arange(pages, dtype=np.int32), device)  # the identity page table
        # positions, then page_indptr, length_info (up to 3), k_rope_pos_offset, q_indptr
        self.tables = tvm.runtime.empty((manifest["prefill_chunk"] + 8,), "int32", device)

    def forward_args(self, start: int, n: int) -> list:
        """The pages and tables of a forward that appends n tokens to the start tokens cached:
        (pages, page_indptr, page_values, length_info, k_rope_pos_offset, q_indptr, positions),
        as the prefill and decode entries take them after their embeddings. The page table
        covers the rows a decode attends to (all, or a sliding window's), or those a prefill's
        paged kernel reads: the ones cached before it (compiler/kv_cache.py attend)."""
        end = start + n
        if n == 1:  # decode; a window's first row: transformers' W keys include the query's own
            first, last = (max(0, end - self.window) if self.window else 0), end
        else:  # prefill: the engine prefills several tokens only while the window cuts nothing
            first, last = 0, start
        pages = -(-last // self.page_size)
        last_rows = last - max(pages - 1, 0) * self.page_size
        # positions first: the longrope kernel takes them at offset 0
        values = np.array([*range(start, end), first // self.page_size, pages, last_rows, first % self.page_size, 0, 0, 0, n], np.int32)
        # copyto, not copyfrom: copyfrom also waits for the device, which on Vulkan would stop the
        # host from issuing a step ahead (the plugin orders the write after the work before it)
        tvm.runtime.tensor(values).copyto(self.tables._create_view((values.size,), "int32"))
        view = lambda at, shape: self.tables._create_view(shape, "int32", 4 * (n + at))
        windowed = n == 1 and self.window
        return [self.pages, view(0, (2,)), self.page_ids._create_view((-(-end // self.page_size),), "int32"),
                view(2, (3, 1) if windowed else (1,)), view(5, (1,)), view(6, (2,)), self.tables._create_view((n,), "int32")]
