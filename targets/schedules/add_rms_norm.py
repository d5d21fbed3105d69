"""GPU schedule for the fused residual-add + RMSNorm kernel (compiler/passes.py).

dlight's RMSNorm rule expects the plain norm's six blocks and its reduction rules do not take a
kernel with two outputs, so without this rule the kernel fell to dlight's fallback: one thread per
row summing 4096 squares serially, 80 us per call on the H100 (docs/benchmarks.md). Here one
thread block handles a row: every thread loads its run of both addends into registers, adds and
squares it, a cross-thread reduction gives the row's sum of squares, and the same threads write
the normed run.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule

KERNEL_ATTR = "mlcgen.kernel"  # set by compiler/passes.py on the kernels this rule schedules
KERNEL = "add_rms_norm"


class AddRMSNorm(ScheduleRule):
    def __init__(self, threads: int = 256):
        self.threads = threads  # 256: a multiple of both wave sizes; 16 elements each at d=4096

    def apply(self, func, target, tunable):
        if func.attrs is None or func.attrs.get(KERNEL_ATTR) != KERNEL:
            return None
        sch = s_tir.Schedule(func)
        root = sch.get_sblock("root")
        intermediates = list(sch.get(root).alloc_buffers)  # buffer names repeat: compare objects
        blocks = sch.get_child_blocks(root)

        def writes_output(block) -> bool:
            return any(not any(r.source.same_as(buf) for buf in intermediates) for r in sch.get(block).writes)

        reduction = [b for b in blocks if any(iv.iter_type == 2 for iv in sch.get(b).iter_vars)]  # 2: reduce
        if len(reduction) != 1:
            return None
        (reduction,) = reduction
        out_sum, out_norm = None, None
        for b in blocks:
            if b == reduction:
                continue
            if writes_output(b):
                out_sum, out_norm = (b, out_norm) if out_sum is None else (out_sum, b)
            else:
                try:
                    sch.compute_inline(b)
                except s_tir.ScheduleError:
                    sch.reverse_compute_inline(b)
        # The residual sum anchors the kernel: a block per row, then the reduction and the norm
        # under the same row loop. All three give thread t the same contiguous run of the row, so
        # each thread reads back only what it wrote itself: no barrier between the phases.
        *rows, col = sch.get_loops(out_sum)
        row = sch.fuse(*rows)
        sch.bind(row, "blockIdx.x")
        # The two addends go to registers first, a thread's whole run at once: the kernel stores to
        # a buffer the compiler cannot prove distinct from its inputs (SPIR-V carries no noalias),
        # so loads interleaved with those stores would wait for each other.
        addends = [sch.cache_read(out_sum, i, "local") for i in range(len(sch.get(out_sum).reads))]
        lane = self._split_across_threads(sch, out_sum)
        for cache in addends:
            sch.compute_at(cache, lane)
            sch.unroll(sch.get_loops(cache)[-1])
        for block in (reduction, out_norm):
            sch.reverse_compute_at(block, row)
            self._split_across_threads(sch, block)
        sch.set_scope(reduction, 0, "local")  # the row's sum: a cross-thread reduction result
        return sch

    def _split_across_threads(self, sch, block):
        """The block's row loop -> (threadIdx.x, unrolled steps over a contiguous run)."""
        lane, steps = sch.split(sch.get_loops(block)[-1], [self.threads, None])
        sch.bind(lane, "threadIdx.x")
        sch.unroll(steps)
        return lane
