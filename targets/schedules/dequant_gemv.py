"""GPU schedule for the decode matmul: y[1, 1, N] = x[1, 1, K] @ dequantize(q_weight, q_scale).T.

At batch 1 every weight byte is read once per token, so the kernel is a memory stream and the
schedule's job is to keep enough wide loads in flight:
- a row of the weight is split across `threads_per_row` lanes, each taking `vector_words` packed
  words per step (4 x uint32 = one 128-bit load = 32 weights = one scale group), `unroll` steps
  at once so that several loads are in flight per lane;
- the lanes' partial sums (float32) meet in one cross-lane reduction; with threads_per_row equal
  to the wave size that is a pure shuffle/DPP reduction, no shared memory;
- `rows_per_block` rows share a thread block, so one block is a few waves; each lane may work on
  `rows_per_thread` rows at once, loading its slice of the activation once for all of them;
- with `packed_fp16`, a lane's scale group is computed in fp16 pairs with a dot-product
  instruction where the target has one (schedules/packed_dot.py): fewer ALU instructions per weight,
  for cards whose ALUs cannot keep up with their memory at 5 instructions per weight;
- with `stage_activation`, the block first copies the activation into shared memory, padded so that
  the lanes' 16-byte reads of their groups do not collide on banks: read straight from global
  memory, each such read of a warp spans 32 lanes x 64 bytes, four times the cache wavefronts of a
  contiguous 512-byte read, on the same path as the weight stream.
The knobs come from the target preset (targets/cuda.py, targets/rocm.py), where each value says
where it comes from. dlight's GEMV rule reached 0.49 of copy bandwidth on the H100 on these
kernels (docs/benchmarks.md); this rule exists to do better and to follow the AMD wave size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from . import packed_dot, q4_schedule

REDUCE = 2  # IterVar.iter_type of a reduction axis


@dataclass(frozen=True)
class GemvKnobs:
    threads_per_row: int = 32
    rows_per_block: int = 4
    vector_words: int = 4  # packed uint32 words per load: 4 -> 128-bit loads
    unroll: int = 2  # steps per lane unrolled together, so their loads are in flight at once
    rows_per_thread: int = 1  # rows a lane works on at once, sharing its activation loads
    activation_lanes: int = 8  # fp16 activations per load: 8 -> 128 bits (WGSL vectors stop at 4)
    packed_fp16: bool = False  # a lane's group in fp16 pairs (schedules/packed_dot.py); needs vector_words 4
    stage_activation: bool = False  # the block copies the activation into shared memory first
    fp16_products: bool = False  # packed form: each word's products summed in fp16 (schedules/packed_dot.py)

    def __post_init__(self):
        if self.packed_fp16 and self.vector_words != 4:
            raise ValueError("packed_fp16 computes one scale group (4 words) per step: it needs vector_words=4")
        if self.fp16_products and not self.packed_fp16:
            raise ValueError("fp16_products is a way of computing the packed form: it needs packed_fp16=True")


class DequantGEMV(ScheduleRule):
    def __init__(self, knobs: GemvKnobs):
        self.knobs = knobs

    def apply(self, func, target, tunable):
        q4 = q4_schedule(func)
        if q4 is None:
            return None
        sch, dequantize = q4
        for block in dequantize:
            sch.compute_inline(block)  # dequantize where the weight word is loaded
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in blocks if any(iv.iter_type == REDUCE for iv in sch.get(b).iter_vars)]
        if len(reductions) != 1 or not self._is_q4_gemv(sch, reductions[0]):
            return None
        (matmul,) = reductions
        epilogues = blocks[blocks.index(matmul) + 1:]
        if blocks.index(matmul) != 0:
            return None  # producers before the matmul (none in the q4 layers) are not handled
        return self._schedule(sch, matmul, epilogues, target)

    @staticmethod
    def _is_q4_gemv(sch, block) -> bool:
        """One output row per weight row, batch 1: every spatial axis but the last has extent 1,
        and the block reads a 2-D uint32 buffer (the packed weight)."""
        stmt = sch.get(block)
        spatial = [iv for iv in stmt.iter_vars if iv.iter_type != REDUCE]
        if len(stmt.iter_vars) - len(spatial) != 1 or not spatial:
            return False
        if any(not isinstance(iv.dom.extent, tirx.IntImm) or int(iv.dom.extent) != 1 for iv in spatial[:-1]):
            return False
        return any(r.source.dtype == "uint32" and len(r.source.shape) == 2 for r in stmt.reads)

    def _packed_knobs(self, rows: int, vectors: int) -> GemvKnobs:
        """The knobs for the packed form at `rows` x `vectors` (128-bit weight vectors per row), or
        the float32 form's where it cannot have them. Tensorize takes no predicated iterations,
        so steps must tile the row exactly: fewer steps unrolled where the row needs it (halved
        until they tile it), fewer rows per block likewise; where the lanes themselves do not
        divide the row (Llama-2-7B's down projection: 344 vectors) the float32 form stays, since
        fewer lanes per row starve the GPU of parallel work (8 lanes: 0.14 of copy bandwidth on an
        H200 against 0.37; docs/benchmarks.md), unstaged (15.6 us there against 16.4 staged)."""
        k = self.knobs
        if vectors % k.threads_per_row:
            return replace(k, packed_fp16=False, stage_activation=False, fp16_products=False)
        unroll = k.unroll
        while vectors % (unroll * k.threads_per_row):
            unroll //= 2
        own_rows = k.rows_per_thread if rows % k.rows_per_thread == 0 else 1
        block_rows = k.rows_per_block
        while rows % (block_rows * own_rows):
            block_rows //= 2
        return replace(k, unroll=unroll, rows_per_block=block_rows, rows_per_thread=own_rows)

    @staticmethod
    def _fits_shared(buffer, target, group) -> bool:
        """The padded activation (a quarter more) in at most 3/4 of the target's shared memory per
        block: a model's widest activation (an 8B down projection: 35 KiB) in CUDA's 48, where
        WebGPU's 16-32 KiB would take only the narrow ones."""
        limit = target.attrs.get("max_shared_memory_per_block")
        padded = int(buffer.source.shape[-1]) // group * (group + 8) * tvm.DataType(str(buffer.source.dtype)).bits // 8
        return limit is not None and padded <= int(limit) * 3 // 4

    @staticmethod
    def _stage_activation(sch, k: GemvKnobs, partial, index, block_rows, group):
        """The activation into shared memory, once per block, each lane's `group` values padded by 16
        bytes: a lane reads its group 16 bytes at a time, lanes `group` values apart, and with the
        pad 8 neighbouring lanes' 16-byte reads fall on distinct banks."""
        staged = sch.cache_read(partial, index, "shared")
        sch.compute_at(staged, block_rows, preserve_unit_loops=True)
        sch.transform_layout(staged, ("write", 0), lambda a, b, i: (a, b, i // group, i % group))
        sch.storage_align(staged, 0, axis=2, factor=group, offset=8)
        fused = sch.fuse(*sch.get_loops(staged)[1:])
        _, ty, tx, vec = sch.split(fused, [None, k.rows_per_block, k.threads_per_row, k.activation_lanes])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vec)

    def _schedule(self, sch, matmul, epilogues, target):
        words = self.knobs.vector_words
        *spatial, reduce = sch.get_loops(matmul)
        row = sch.fuse(*spatial)
        k = self.knobs
        if k.packed_fp16:
            k = self._packed_knobs(int(sch.get(row).extent), int(sch.get(reduce).extent) // (8 * words))
        block_rows, thread_row, own_row = sch.split(row, [None, k.rows_per_block, k.rows_per_thread])
        # reduce = ((step * unroll + u) * lanes + lane) * 8 * words + element
        step, u, lane, element = sch.split(reduce, [None, k.unroll, k.threads_per_row, 8 * words])
        sch.reorder(step, lane, u, element)
        partial = sch.rfactor(lane, factor_axis=0)  # per-lane float32 sums, then one cross-lane sum

        block_rows, thread_row, own_row, step, lane, u, element = sch.get_loops(partial)
        # A lane's activation slice is loaded once per step for all of its rows.
        sch.reorder(block_rows, thread_row, lane, step, u, own_row, element)
        sch.bind(block_rows, "blockIdx.x")
        sch.bind(thread_row, "threadIdx.y")
        sch.bind(lane, "threadIdx.x")
        for index, buffer in enumerate(sch.get(partial).reads):
            if buffer.source.dtype == "uint32" or len(buffer.source.shape) == 3:  # packed weight, activation
                if len(buffer.source.shape) == 3 and k.stage_activation and self._fits_shared(buffer, target, 8 * words):
                    self._stage_activation(sch, k, partial, index, block_rows, 8 * words)
                cache = sch.cache_read(partial, index, "local")
                sch.compute_at(cache, u, preserve_unit_loops=True)
                inner = sch.get_loops(cache)[-1]
                lanes = words if buffer.source.dtype == "uint32" else k.activation_lanes
                sch.vectorize(sch.split(inner, [None, lanes])[-1])
        sch.unroll(u)
        sch.unroll(own_row)
        sch.set_scope(partial, 0, "local")
        sch.decompose_reduction(partial, step)

        sch.reverse_compute_at(matmul, thread_row, preserve_unit_loops=True)
        lane_sum, *units = sch.get_loops(matmul)[2:]  # the cross-lane sum and unit spatial loops
        sch.reorder(*units, lane_sum)  # TVM lowers a cross-thread reduction only as the innermost loop
        sch.bind(lane_sum, "threadIdx.x")
        if epilogues:
            sch.set_scope(matmul, 0, "local")
        for block in epilogues:  # cast, residual add, ...: intermediates inline into the output block
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:
                sch.reverse_compute_at(block, thread_row, preserve_unit_loops=True)
        if k.packed_fp16:  # last: tensorize replaces the partial-sum block
            sch.tensorize(element, packed_dot.intrinsic_for(target, k.fp16_products))
        else:
            sch.unroll(element)
        return sch
