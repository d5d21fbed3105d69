"""GPU schedule for the fused residual-add + RMSNorm kernel (compiler/passes.py).

dlight's RMSNorm rule expects the plain norm's six blocks and its reduction rules do not take a
kernel with two outputs, so without this rule the kernel fell to dlight's fallback: one thread per
row summing 4096 squares serially, 80 us per call on the H100 (docs/benchmarks.md). Here one
thread block handles a row: every thread adds and squares a strided slice, a cross-thread
reduction gives the row's sum of squares, and the same threads write the normed slice. Each
thread reads back only the elements it wrote itself (all phases split the row alike), so no
barrier is needed between the phases. A thread's elements come in runs of VECTOR (vector loads
and stores) where the row length allows.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule

KERNEL_ATTR = "mlcgen.kernel"  # set by compiler/passes.py on the kernels this rule schedules
KERNEL = "add_rms_norm"
EPSILON_ATTR = "mlcgen.rms_norm_epsilon"  # the kernel's epsilon, for passes that rebuild it (compiler/int8_activations.py)
# 4: WGSL's vectors stop at 4 lanes, and TVM's CUDA code for 8-lane float32 vectors (the norm is
# computed in float32) does not compile (make_ulonglong4 with 8 arguments).
VECTOR = 4


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
        # under the same row loop, all three split the row the same way across the threads.
        *rows, col = sch.get_loops(out_sum)
        vector = VECTOR if int(sch.get(col).extent) % (self.threads * VECTOR) == 0 else 1
        row = sch.fuse(*rows)
        sch.bind(row, "blockIdx.x")
        for block in (out_sum, reduction, out_norm):
            if block != out_sum:
                sch.reverse_compute_at(block, row)
            _, thread, run = sch.split(sch.get_loops(block)[-1], [None, self.threads, vector])
            sch.bind(thread, "threadIdx.x")
            if block == reduction:
                sch.reorder(run, thread)  # TVM lowers a cross-thread reduction only as the innermost loop
            else:
                sch.vectorize(run)
        sch.set_scope(reduction, 0, "local")  # the row's sum: a cross-thread reduction result
        return sch
