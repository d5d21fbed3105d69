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
  contiguous 512-byte read, on the same path as the weight stream;
- with `early_loads_from_rows` (CUDA), in GEMVs of that many rows a lane loads its weight words and
  scales by strong loads at its start, before the block stages its activation: ptxas keeps them
  there, where it moves ordinary loads past the barrier and into the arithmetic (_early_loads);
- with `activation_words` (WGSL, whose vectors stop at 4 lanes: 8-byte fp16 loads), a lane loads
  its activations as 16-byte words and converts them to float32 once for all of its rows
  (packed_dot.activation_words);
- a matmul on int8 activation codes (compiler/int8_activations.py, `--int8-activations`) takes
  the packed form's steps, each scale group in integer dot products (packed_dot.int8_intrinsic_for);
- with a folded RMSNorm (compiler/norm_fold.py), the GEMV before the norm also writes each block's
  sum of squares into a slot, and the GEMVs after it sum the slots and scale their dot products
  or, where they stage it, their activation;
- rows whose scale groups the lanes do not divide are padded to whole steps (zero activation past
  the row, weight reads clamped to it), and a gate/up projection with its SwiGLU epilogue gives
  each lane gate row r and up row r + N/2, so the epilogue needs no second kernel.
The knobs come from the target preset (targets/cuda.py, targets/rocm.py), where each value says
where it comes from. dlight's GEMV rule reached 0.49 of copy bandwidth on the H100 on these
kernels (docs/benchmarks.md); this rule exists to do better and to follow the AMD wave size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import tvm
from tvm import ir, s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from ...compiler.int8_activations import ACTIVATION_BLOCK
from ...compiler.layers import DEQUANTIZE, SWIGLU
from ...compiler.norm_fold import NORMALIZED, SQUARE_SUM, SQUARE_TOTAL
from . import packed_dot, q4_schedule

REDUCE = 2  # IterVar.iter_type of a reduction axis
GROUP = packed_dot.GROUP  # weights per packed step of a lane: one scale group


@dataclass(frozen=True)
class GemvKnobs:
    threads_per_row: int = 32
    rows_per_block: int = 4
    vector_words: int = 4  # packed uint32 words per load: 4 -> 128-bit loads
    unroll: int = 2  # at most this many steps per lane unrolled together, their loads in flight at once
    rows_per_thread: int = 1  # rows a lane works on at once, sharing its activation loads
    activation_lanes: int = 8  # fp16 activations per load: 8 -> 128 bits (WGSL vectors stop at 4)
    packed_fp16: bool = False  # a lane's group in fp16 pairs (schedules/packed_dot.py); needs vector_words 4
    stage_activation: bool = False  # the block copies the activation into shared memory first
    fp16_products: bool = False  # packed form: each word's products summed in fp16 (schedules/packed_dot.py)
    # CUDA, packed form: in GEMVs of at least this many rows (0: none) whose lanes take all of their
    # steps in one round, unpadded, with no folded norm to stage, a lane's weight words and scales
    # are loaded at its start by strong loads, before the block stages its activation (_load_early)
    early_loads_from_rows: int = 0
    # WGSL, packed form: each lane loads its activations as 16-byte words and converts them to
    # float32 once for all of its rows (packed_dot.activation_words); rows that need padding keep fp16
    activation_words: bool = False
    # Rows the lanes' steps do not tile are padded; fewer steps are unrolled where whole steps would
    # add more than this fraction to the row
    max_padding: float = 1 / 8
    # The decode RMSNorms folded into the GEMVs around them (compiler/norm_fold.py): the q/k/v and
    # gate/up GEMVs read the residual stream times the norm's weight and normalize it where they
    # stage it; unstaged, they scale their dot products, so their products see it unnormalized,
    # which only float32 products take (with fp16 ones: NaN logits on CUDA at 7B)
    fold_rms_norm: bool = False
    fold_into_swiglu: bool = True  # the norm before a gate/up projection with its SwiGLU epilogue folded too

    def __post_init__(self):
        if self.packed_fp16 and self.vector_words != 4:
            raise ValueError("packed_fp16 computes one scale group (4 words) per step: it needs vector_words=4")
        if self.fp16_products and not self.packed_fp16:
            raise ValueError("fp16_products is a way of computing the packed form: it needs packed_fp16=True")
        if self.fold_rms_norm and self.fp16_products and not self.stage_activation:
            raise ValueError("fold_rms_norm without stage_activation feeds the GEMVs an activation that is not normalized: "
                             "fp16 products would overflow")
        if self.early_loads_from_rows and not self.packed_fp16:
            raise ValueError("early loads hand the packed form's intrinsic its scales in registers: they need packed_fp16=True")
        if self.activation_words and (not self.packed_fp16 or self.stage_activation):
            raise ValueError("activation_words feeds the packed form's registers: it needs packed_fp16=True, unstaged")


class DequantGEMV(ScheduleRule):
    def __init__(self, knobs: GemvKnobs):
        self.knobs = knobs

    def apply(self, func, target, tunable):
        inlined = self._inlined(func)
        if inlined is None:
            return None
        sch, matmul, before, epilogues, int8 = inlined
        *spatial, reduce = sch.get_loops(matmul)
        k = self.knobs
        if self._swiglu(sch, epilogues):
            k = replace(k, rows_per_thread=2)  # a lane's two rows: gate row r and up row r + N/2
        if int8 and k.vector_words != 4:
            raise ValueError("an int8-activation GEMV computes a scale group (4 words) a step: it needs vector_words=4")
        if k.packed_fp16 or int8:  # a scale group a step: steps must tile the row (int8: always, by the rewrite)
            rows = math.prod(int(sch.get(loop).extent) for loop in spatial)
            k = self._packed_knobs(rows, int(sch.get(reduce).extent) // GROUP)
            step = k.threads_per_row * k.unroll * GROUP
            if int(sch.get(reduce).extent) % step:
                if int8:
                    raise ValueError(f"internal: an int8-activation GEMV whose rows {step} weights a step do not tile")
                sch, matmul, before, epilogues, _ = self._inlined(func, pad_to=step)
        return self._schedule(sch, matmul, before, epilogues, target, k, int8)

    def _inlined(self, func, pad_to: int = 0):
        """(schedule, matmul block, blocks before it, blocks after it, whether the activation is
        int8) with the dequantize inlined, or None where `func` is not a q4 GEMV. The blocks before
        the matmul are a folded RMSNorm's that normalize its activation (compiler/norm_fold.py)
        and, with `pad_to`, the padding of its activation: the reduction is first padded to a
        multiple of it (_pad_reduction)."""
        q4 = q4_schedule(func)
        if q4 is None:
            return None
        sch, dequantize = q4
        int8 = any(sch.get(b).name_hint == ACTIVATION_BLOCK for b in dequantize)
        if pad_to:
            dequantize.append(self._pad_reduction(sch, pad_to))
        for block in dequantize:
            sch.compute_inline(block)  # dequantize where the weight word is loaded
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = self._reductions(sch, blocks)
        matmuls = [b for b in reductions if self._is_q4_gemv(sch, b)]
        if len(matmuls) != 1 or len(reductions) - 1 != self._swiglu(sch, reductions):
            return None  # one q4 matmul; the only other reduction allowed is the SwiGLU pair's product
        index = blocks.index(matmuls[0])
        norm = [b for b in blocks[:index] if sch.get(b).name_hint in (SQUARE_TOTAL, NORMALIZED)]
        if index != bool(pad_to) + len(norm):
            return None  # other producers before the matmul (none in the q4 layers) are not handled
        return sch, matmuls[0], blocks[:index], blocks[index + 1:], int8

    @staticmethod
    def _reductions(sch, blocks) -> list:
        """The blocks with a reduction axis, in order: the matmul, then any SwiGLU product (a
        folded RMSNorm's sums of squares are not counted: _slot_sums and _slot_total take them)."""
        return [b for b in blocks if any(iv.iter_type == REDUCE for iv in sch.get(b).iter_vars)
                and sch.get(b).name_hint not in (SQUARE_SUM, SQUARE_TOTAL)]

    @staticmethod
    def _pad_reduction(sch, multiple: int):
        """Pads the matmul's reduction to a multiple of `multiple` weights, so that the lanes' steps
        tile every row and the packed group needs no predicate (tensorize takes none): Llama-2-7B's
        down projection has 344 groups a row, which 32 lanes do not divide. The activation is read
        through a padding block, zero past the row (the schedule inlines it where the activation is
        staged); the weight and scale reads of the padded groups are clamped to the row's last
        group, in bounds and finite, so their products are exactly zero. Returns the dequantized
        weight's padding block, now a plain read, to be inlined."""
        matmul = DequantGEMV._reductions(sch, sch.get_child_blocks(sch.get_sblock("root")))[0]
        iters = sch.get(matmul).iter_vars
        groups = int(iters[-1].dom.extent) // GROUP
        sch.pad_einsum(matmul, [1] * (len(iters) - 1) + [multiple])
        padding = sch.get_sblock(DEQUANTIZE + "_pad")
        block = sch.get(padding)
        k = block.body.indices[-1]
        weight = block.body.value.args[1]  # if_then_else(k < K, dequantize[n, k], 0)
        clamped = [*weight.indices[:-1], tirx.min(k // GROUP, groups - 1) * GROUP + k % GROUP]
        read = tirx.BufferRegion(weight.source, [ir.Range.from_min_extent(i, 1) for i in clamped])
        body = tirx.BufferStore(block.body.buffer, tirx.BufferLoad(weight.source, clamped), block.body.indices)
        plain = s_tir.SBlock(block.iter_vars, [read], block.writes, block.name_hint, body)
        sch.state.replace(sch.get_sref(padding), plain, {block: plain})
        return padding

    @staticmethod
    def _swiglu(sch, blocks) -> bool:
        """Whether `blocks` hold the SwiGLU epilogue of a gate/up projection (compiler/layers.py)."""
        return any(sch.get(b).name_hint == SWIGLU for b in blocks)

    @staticmethod
    def _pair_gate_and_up_rows(sch, matmul):
        """For the SwiGLU epilogue (compiler/layers.py), whose row r needs matmul rows r and r + N/2:
        the matmul iterated and stored as [2, N/2]. Returns its loops: batch, token, gate or up,
        row, reduction."""
        half = int(sch.get(matmul).iter_vars[-2].dom.extent) // 2  # iters: batch, token, row, reduction
        sch.transform_block_layout(matmul, lambda b, t, n, k: (b, t, n // half, n % half, k))
        sch.transform_layout(matmul, ("write", 0), lambda b, t, n: (b, t, n // half, n % half))
        return sch.get_loops(matmul)

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
        """The knobs for the packed form at `rows` x `vectors` (128-bit weight vectors per row).
        Tensorize takes no predicated iterations, so the steps must tile the row. Where the lanes
        divide the row, `unroll` is the most steps, at most the knob's, that tile it exactly: padding
        such a row costs more than rounds do (Llama-3-8B's down projection, 14 steps a lane, 7 + 7:
        11.6 us on the H200, 4 + 4 + 4 + 4 padded: 17.8, 2 x 7: 12.8). Where they do not
        (Llama-2-7B's down projection: 344 vectors), `apply` pads the row (_pad_reduction), as fewer
        lanes starve the GPU of parallel work (8 lanes: 0.14 of copy bandwidth against 0.37 for the
        float32 form); its steps are spread evenly over as few rounds as the knob allows (11 steps
        with unroll 16: one round of 11, 352 vectors), with fewer unrolled where padding would add
        more than max_padding to the row (docs/benchmarks.md)."""
        k = self.knobs
        lanes = k.threads_per_row
        steps = -(-vectors // lanes)  # a lane's steps along the row
        if vectors % lanes == 0:
            unroll = max(u for u in range(1, k.unroll + 1) if steps % u == 0)
        else:
            unroll = -(-steps // -(-steps // k.unroll))  # as few rounds as the knob allows, evenly filled
            while unroll > 1 and -(-steps // unroll) * unroll * lanes > vectors * (1 + k.max_padding):
                unroll -= 1
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
    def _stage_activation(sch, k: GemvKnobs, partial, index, at, group):
        """The activation into shared memory, once per block (under `at`: the block's loop, or the
        lane's after its early loads), each lane's `group` values padded by 16 bytes: a lane reads its
        group 16 bytes at a time, lanes `group` values apart, and with the pad 8 neighbouring lanes'
        16-byte reads fall on distinct banks."""
        staged = sch.cache_read(partial, index, "shared")
        sch.compute_at(staged, at, preserve_unit_loops=True)
        sch.transform_layout(staged, ("write", 0), lambda a, b, i: (a, b, i // group, i % group))
        sch.storage_align(staged, 0, axis=2, factor=group, offset=8)
        fused = sch.fuse(*sch.get_loops(staged)[-3:])  # its own loops: the activation's 3 axes
        _, ty, tx, vec = sch.split(fused, [None, k.rows_per_block, k.threads_per_row, k.activation_lanes])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vec)

    @staticmethod
    def _early_loads(sch, k: GemvKnobs, target, partial, step, int8: bool, before) -> bool:
        """Whether a lane loads its weight words and scales at its start (early_loads_from_rows).
        Where they pay (H200, docs/benchmarks.md, session 29): ptxas leaves ordinary loads of
        read-only data where its register budget likes, a lane's weights in two or three dependent
        rounds of memory latency after the block's barrier and its scales last; a strong load stays
        where it is written, but the block's barrier then most likely waits for it. The 7B and 8B
        gate/up GEMVs took 5% less time and the lm_heads 3-5% less; GEMVs of one wave of blocks
        (o, down) took 6-33% more, and the q/k/v GEMVs, whose blocks also sum a folded norm's
        slots, 27%. Rows the steps do not tile (padded) keep ordinary loads."""
        weight = next(b.source for b in sch.get(partial).reads if b.source.dtype == "uint32" and len(b.source.shape) == 2)
        rows, words = (int(d) for d in weight.shape)
        early = (0 < k.early_loads_from_rows <= rows and not int8 and int(sch.get(step).extent) == 1
                 and words % (k.threads_per_row * k.vector_words) == 0
                 and not any(sch.get(b).name_hint == SQUARE_TOTAL for b in before))
        if early and target.kind.name != "cuda":  # narrower GEMVs run the knobs anywhere (the lavapipe tests)
            raise ValueError(f"early loads are CUDA inline PTX (packed_dot.strong_load), not for {target.kind.name}")
        return early

    @staticmethod
    def _load_early(sch, partial, index, lane, k: GemvKnobs, paired: bool, lanes: int):
        """A lane's values of the partial block's read `index` (weight words, `lanes` a load, or
        scales, one) for all of its steps, loaded into registers by strong loads at the start of
        its thread (packed_dot.strong_load), before the block stages its activation: the cache is
        laid out [row, step, value of a step] (gate and up rows apart: [gate or up, row, step,
        value]), so that a thread's region is its own values."""
        cache = sch.cache_read(partial, index, "local")
        span = k.threads_per_row * lanes  # values a row's lanes take in one step
        rows = int(sch.get(cache).iter_vars[0].dom.extent)
        if paired:
            half = rows // 2
            index_map = lambda n, v: (n // half, n % half, v // span, v % span)
        else:
            index_map = lambda n, v: (n, v // span, v % span)
        sch.transform_block_layout(cache, index_map)  # first: then the write's indices are the block's own
        sch.transform_layout(cache, ("write", 0), index_map)
        sch.compute_at(cache, lane, preserve_unit_loops=True, index=-2)
        dtype = str(sch.get(cache).writes[0].source.dtype)
        inner = sch.split(sch.get_loops(cache)[-1], [None, lanes])[-1]
        sch.tensorize(inner, packed_dot.strong_load(dtype, lanes))

    @staticmethod
    def _slot_sums(sch, block, block_rows, k: GemvKnobs):
        """A producer's sums of squares for a folded RMSNorm (compiler/norm_fold.py), a slot per
        thread block: each warp sums the squares of its own rows, then the warps meet in one sum."""
        rows = int(sch.get(block).iter_vars[-1].dom.extent)
        if rows != k.rows_per_block * k.rows_per_thread:
            raise ValueError(f"internal: a folded RMSNorm's slot of {rows} rows where a GEMV block computes "
                             f"{k.rows_per_block} x {k.rows_per_thread}")
        warp, _ = sch.split(sch.get_loops(block)[-1], [k.rows_per_block, k.rows_per_thread])
        partial = sch.rfactor(warp, factor_axis=0)
        for b in (partial, block):
            sch.reverse_compute_at(b, block_rows, preserve_unit_loops=True)
        sch.bind(sch.get_loops(partial)[1], "threadIdx.y")
        _, warp, unit = sch.get_loops(block)
        sch.reorder(unit, warp)  # TVM lowers a cross-thread reduction only as the innermost loop
        sch.bind(warp, "threadIdx.y")
        sch.set_scope(partial, 0, "local")

    @staticmethod
    def _slot_total(sch, block, loop, k: GemvKnobs, before_reads: bool):
        """A consumer's sum of the slots, under `loop`. It reads only the slots, so no producer keeps
        it from there: the row's loop, where the epilogue applies the factor after the dot products
        and the slot loads wait on nothing, each warp summing all the slots, lane-strided, in one
        cross-lane sum; or, `before_reads`, the block's loop, ahead of the activation it normalizes,
        all the block's threads summing them once (a warp each read them rows_per_block times over:
        7B q/k/v 334 us a step against 315 on CUDA, docs/benchmarks.md)."""
        rows = k.rows_per_block if before_reads else 1
        slots = sch.get_loops(block)[-1]
        if int(sch.get(slots).extent) % (rows * k.threads_per_row):
            raise ValueError(f"internal: {rows} x {k.threads_per_row} threads do not divide the padded slots "
                             f"({sch.get(slots).extent}; norm_fold.SLOT_PADDING)")
        _, t = sch.split(slots, [None, rows * k.threads_per_row])
        partial = sch.rfactor(t, factor_axis=0)
        own = len(sch.get_loops(partial))  # the threads' loop first
        if before_reads:
            for b in (block, partial):
                sch.compute_at(b, loop, preserve_unit_loops=True)
        else:
            for b in (partial, block):
                sch.reverse_compute_at(b, loop, preserve_unit_loops=True)
        loops = sch.get_loops(partial)
        DequantGEMV._bind_rows_and_lanes(sch, loops[len(loops) - own], k, rows)
        *_, t, unit = sch.get_loops(block)
        sch.reorder(unit, t)  # TVM lowers a cross-thread reduction only as the innermost loop
        DequantGEMV._bind_rows_and_lanes(sch, t, k, rows)
        sch.set_scope(partial, 0, "local")
        sch.set_scope(block, 0, "local")

    @staticmethod
    def _bind_rows_and_lanes(sch, loop, k: GemvKnobs, rows: int):
        """`loop` (rows x lanes) to threadIdx.y and threadIdx.x; with one row, to the lanes alone."""
        if rows == 1:
            sch.bind(loop, "threadIdx.x")
            return
        row, lane = sch.split(loop, [rows, k.threads_per_row])
        sch.bind(row, "threadIdx.y")
        sch.bind(lane, "threadIdx.x")

    def _schedule(self, sch, matmul, before, epilogues, target, k: GemvKnobs, int8: bool):
        words = k.vector_words
        paired = self._swiglu(sch, epilogues)
        if paired:  # a lane's two rows: gate row r and up row r + N/2
            *spatial, own_row, row, reduce = self._pair_gate_and_up_rows(sch, matmul)
            sch.reorder(row, own_row)
            block_rows, thread_row = sch.split(sch.fuse(*spatial, row), [None, k.rows_per_block])
        else:
            *spatial, reduce = sch.get_loops(matmul)
            block_rows, thread_row, own_row = sch.split(sch.fuse(*spatial), [None, k.rows_per_block, k.rows_per_thread])
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
        activation_words = k.activation_words and not before  # the words are read as stored: nothing to inline
        early = self._early_loads(sch, k, target, partial, step, int8, before)
        for index, buffer in enumerate(sch.get(partial).reads):
            weight = buffer.source.dtype == "uint32" and len(buffer.source.shape) == 2  # not an int8 activation's
            if early and len(buffer.source.shape) == 2:  # weight words, scales
                self._load_early(sch, partial, index, lane, k, paired, words if weight else 1)
                continue
            if buffer.source.dtype == "uint32" or len(buffer.source.shape) == 3:  # packed weight, activation
                if len(buffer.source.shape) == 3 and k.stage_activation and self._fits_shared(buffer, target, 8 * words):
                    self._stage_activation(sch, k, partial, index, lane if early else block_rows, 8 * words)
                cache = sch.cache_read(partial, index, "local")
                # a lane's words for each of its rows; for gate and up rows (far apart), row by row
                sch.compute_at(cache, own_row if paired and weight else u, preserve_unit_loops=True)
                inner = sch.get_loops(cache)[-1]
                if activation_words and buffer.source.dtype != "uint32":
                    sch.unsafe_set_dtype(cache, 0, "float32")
                    sch.tensorize(inner, packed_dot.activation_words())
                    continue
                lanes = words if buffer.source.dtype == "uint32" else k.activation_lanes
                sch.vectorize(sch.split(inner, [None, lanes])[-1])
        totals = [b for b in before if sch.get(b).name_hint == SQUARE_TOTAL]
        for block in before:  # padding, normalization: inlined where the activation is first read, staged or per lane
            if block not in totals:
                sch.compute_inline(block)
        for block in totals:  # the norm's factor, before the block's activation is read
            self._slot_total(sch, block, block_rows, k, before_reads=True)
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
        sums = [b for b in epilogues if sch.get(b).name_hint == SQUARE_SUM]
        totals = [b for b in epilogues if sch.get(b).name_hint == SQUARE_TOTAL]
        epilogues = [b for b in epilogues if b not in sums + totals]
        for block in totals:  # first: the epilogue that reads it follows it to the row's loop
            self._slot_total(sch, block, thread_row, k, before_reads=False)
        intermediates = sch.get(sch.get_sblock("root")).alloc_buffers
        for block in epilogues:  # cast, residual add, ...: intermediates inline into the output blocks
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:  # an output block, or the SwiGLU product (a reduction)
                sch.reverse_compute_at(block, thread_row, preserve_unit_loops=True)
                if any(sch.get(block).writes[0].source.same_as(b) for b in intermediates):
                    sch.set_scope(block, 0, "local")
        for block in sums:  # last: they read the residual add inlined
            self._slot_sums(sch, block, block_rows, k)
        if int8:  # last: tensorize replaces the partial-sum block
            sch.tensorize(element, packed_dot.int8_intrinsic_for(target, 5 if paired else 4))
        elif k.packed_fp16:
            sch.tensorize(element, packed_dot.intrinsic_for(target, k.fp16_products, 5 if paired else 4, activation_words,
                                                            "local" if early else "global"))
        else:
            sch.unroll(element)
        return sch
