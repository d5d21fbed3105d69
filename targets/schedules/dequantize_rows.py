"""GPU schedule for the fp16 weight slices a library prefill dequantizes (compiler/passes.py
offload_prefill_matmuls).

dlight's fallback gave each thread one fp16 value (the packed word re-read by 8 threads, 64-bit
index arithmetic per value) and wrote ~530 GB/s on the H200: a 7B prefill spent 24.5 ms in it
(docs/benchmarks.md). Here a thread takes one packed word: it loads the word and its scale once,
computes its 8 values in registers and writes them as one 16-byte store.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule

from .add_rms_norm import KERNEL_ATTR

KERNEL = "dequantize_rows"  # the KERNEL_ATTR value compiler/passes.py gives these kernels
BLOCK = "weight_rows"  # their one block


class DequantizeRows(ScheduleRule):
    def __init__(self, values_per_word: int = 8, threads: int = 256):
        self.values_per_word, self.threads = values_per_word, threads

    def apply(self, func, target, tunable):
        if func.attrs is None or func.attrs.get(KERNEL_ATTR) != KERNEL:
            return None
        sch = s_tir.Schedule(func)
        block = sch.get_sblock(BLOCK)
        values = sch.cache_write(block, 0, "local")
        row, column = sch.get_loops(block)
        word, value = sch.split(column, [None, self.values_per_word])
        thread_block, thread = sch.split(sch.fuse(row, word), [None, self.threads])
        sch.bind(thread_block, "blockIdx.x")
        sch.bind(thread, "threadIdx.x")
        sch.unroll(value)
        sch.reverse_compute_at(values, thread)
        sch.vectorize(sch.get_loops(values)[-1])
        return sch
