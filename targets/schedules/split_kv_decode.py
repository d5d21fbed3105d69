"""Decode attention over the paged KV cache, split along the sequence (flash-decoding).

TVM's decode kernel gives each (sequence, KV head) one thread block that walks the whole context:
32 blocks for Llama-2-7B at batch 1, 8 for Llama-3-8B, on GPUs with 96-132 compute units, and the
longer the context the longer the few busy units take. Here each (sequence, KV head) is also split
into up to `splits` row ranges, in two kernels of one PrimFunc:
1. partial: one block per (sequence, split, KV head). A KV row is read by `lanes` = head_dim /
   `vector` lanes, one `vector`-wide load each (16 bytes on CUDA/ROCm), so a row's dot product is
   a reduction over a few lanes of one wave (shuffles/DPP; workgroup memory where WebGPU has no
   subgroups); the wave's other
   lanes take the next rows, and each lane loads `unroll` rows before using any, so that many
   loads are in flight. All query heads of a GQA group share each K/V load. Each row slot keeps
   an online softmax (running max, sum, output); the slots of a block merge through shared memory
   (halving rounds down to SERIAL_SLOTS, which one slot merges; with `parallel_merge` a GQA
   group's heads are merged at once, a slot each) and the block writes its split's unnormalized
   output, max and sum (float32) to a workspace. Rows past the split are
   loaded as zeros and masked out of the softmax (no branches around the math). With `async_copy`
   (CUDA) each step's rows come through shared memory by cp.async, the next step's copied while a
   lane works on this one's: loaded into registers, ptxas issued V's loads only after the scores
   that need K, a second memory latency every step.
2. merge: one block per (sequence, query head) rescales the splits to a common max and writes the
   output and its log-sum-exp (base 2, as the KV cache's merge kernels expect). Its threads request
   up to MERGE_LOADS splits' outputs, then every split's max and sum (into shared memory), so that
   both arrive in one round of loads.
Short sequences (at most `whole_rows` rows a sequence on average, from the page count) skip the
split: one block of `whole_threads` threads per (sequence, KV head) reads every row and writes the
output itself, with no merge kernel to launch: the merge is a launch and a dependent round of
loads, ~2-3 us, where a 7B head's 128 rows take ~3 (benchmarks/attention_speed.py).
The split count is chosen on the host from the batch size and page count, so that there are about
`blocks` (query head, split) pairs (a few per compute unit; a preset may ask grouped models for
more, `grouped_blocks`, and for other rows in flight, `grouped_unroll`), with at most one split
per MIN_SPLIT_ROWS rows of the sequence's pages. A group's query heads are unrolled loops, so that
their queries, softmax states and outputs stay in registers.

It replaces TVM's decode kernel by name (`use_split_kv_decode`), with the same signature (rotary
embedding applied before it, rotary_mode 0), and where the preset asks (`fuse_rope_append`) each
pair of calls rope_append + attention in the model's decode (compiler/kv_cache.py) becomes one
call of its fused form, which takes the step's unrotated q/k/v instead of q: each block rotates
its query heads as it loads them, and the block whose split holds the sequence's last row (the
step's own) first writes that row's rotated K and its V into the pages, each lane the slice it
later reads: no other block reads that row, so no grid-wide ordering is needed, and a layer has a
dispatch fewer. Two cases keep TVM's kernel and the separate rope_append: head dims that do not split into a power-of-two lane count (Phi-3's 96), and
sliding-window models (TVM's `_sliding_window` kernel, which skips the rows before the window);
Phi-3's longrope keeps the separate rope_append too (it rotates before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

MIN_SPLIT_ROWS = 16  # rows a split gets at least (the count of splits is fixed on the host, from the page count)
LOG2E = math.log2(math.e)
# Splits whose partial outputs a merge thread loads at once, at most: one round for the cuda
# preset's 33 splits (Llama-3-8B), 4 waves a SIMD on gfx90a (64: 138 VGPRs, 3 waves; tests/test_rocm.py)
MERGE_LOADS = 48
SERIAL_SLOTS = 8  # row slots of a block that its first slot merges alone (more halve first)
CP_ASYNC = r"""
template <typename T>
__device__ __forceinline__ void mlcgen_cp_async16(T* shared, int offset, const void* global, int bytes) {
  unsigned to = (unsigned)__cvta_generic_to_shared(shared + offset);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(to), "l"(global), "r"(bytes) : "memory");
}
"""
CP_ASYNC_COMMIT = r"""
__device__ __forceinline__ void mlcgen_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
"""
CP_ASYNC_WAIT = r"""
__device__ __forceinline__ void mlcgen_cp_async_wait_one() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
"""
CP_ASYNC_WAIT_ALL = r"""
__device__ __forceinline__ void mlcgen_cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
"""
STATIC_SHARED_BYTES = 48 << 10  # a CUDA block's static shared memory without opt-in (async_copy's stages)
MASKED = -1e30  # the score of a row past the split: exp2 of it less any running max is 0
NAME = "batch_decode_paged_kv"


@dataclass(frozen=True)
class AttentionKnobs:
    vector: int = 8  # head-dim elements per lane per load: 8 x fp16 = 128 bits
    threads: int = 128  # per block of the partial kernel
    unroll: int = 4  # rows a lane loads before using any: loads in flight
    # (query head, split) pairs to aim for: a few per compute unit for one sequence of an MHA
    # model; a GQA block serves its group's heads, so grouped models get fewer, longer blocks and
    # fewer partials to merge (Llama-3-8B shape at 1024 tokens on the H200: 10.7 us a call
    # against 18.3 when counting blocks; benchmarks/attention_speed.py, docs/benchmarks.md)
    blocks: int = 512
    # For models whose query heads share KV heads (None: as above): a grouped row costs a dot
    # product and a cross-lane sum per query head, so such models may want other values
    grouped_blocks: int | None = None
    grouped_unroll: int | None = None
    # Sequences whose pages hold at most this many rows on average are read by one block each, of
    # `whole_threads` threads, which writes the output itself: no merge kernel (0: always split);
    # grouped models may want another value (None: the same)
    whole_rows: int = 0
    whole_threads: int = 512
    grouped_whole_rows: int | None = None
    # CUDA (sm_80+), split path: each step's rows are copied into shared memory by cp.async, the next
    # step's while this one's are used (ptxas sinks plain loads of V below the scores that need K)
    async_copy: bool = False
    # A GQA block's query heads merged at once, each by its own row slot, with shared memory for
    # all of their slots' states (False: one head after another, by slot 0, in one head's memory)
    parallel_merge: bool = False
    # The decode's rope_append fused into the attention (module doc): on the H200 through Vulkan
    # +7-8% (7B, 8B); through CUDA 7B 1513 -> 1481 us of kernels a step, 8B 1666 -> 1641, with
    # the angles computed once a lane and CUDA's fast sine and cosine (accurate ones: 7B 1632,
    # 8B 2372) (docs/benchmarks.md, session 31)
    fuse_rope_append: bool = False


def for_model(knobs: AttentionKnobs, heads: int, kv_heads: int) -> AttentionKnobs:
    """The knobs for this model's head grouping: `blocks`, `unroll` and `whole_rows` from the grouped
    values for grouped (GQA) models where the preset gives them."""
    if heads == kv_heads:
        return knobs
    whole_rows = knobs.whole_rows if knobs.grouped_whole_rows is None else knobs.grouped_whole_rows
    return replace(knobs, blocks=knobs.grouped_blocks or knobs.blocks, unroll=knobs.grouped_unroll or knobs.unroll, whole_rows=whole_rows)


def halving_rounds(slots: int) -> int:
    """Rounds that halve a block's row slots (a power of two) down to SERIAL_SLOTS."""
    return max(0, slots.bit_length() - SERIAL_SLOTS.bit_length())


def heads_merged_at_once(group: int, slots: int, parallel: bool) -> int:
    """Query heads whose row slots a block merges at once (`parallel_merge`): the most that divide
    the group, one row slot each."""
    return max(h for h in range(1, min(group, slots) + 1) if group % h == 0) if parallel else 1


def lanes_per_row(head_dim: int, knobs: AttentionKnobs) -> int | None:
    """Lanes sharing a KV row (a power of two that divides the block), else None: keep TVM's kernel."""
    lanes = head_dim // knobs.vector
    fits = head_dim % knobs.vector == 0 and lanes & (lanes - 1) == 0 and knobs.threads % lanes == 0
    return lanes if fits else None


def split_kv_decode(heads: int, kv_heads: int, head_dim: int, dtype: str, knobs: AttentionKnobs, lanes: int, page_size: int,
                    rope: tuple | None = None):
    """rope (theta, scaling items): the fused form (module doc): the first argument is the step's
    q/k/v [batch, heads + 2 kv_heads, head_dim], unrotated, whose K and V rows it appends."""
    # The KV cache's length convention (the last page's length) is TVM's: its helpers read it.
    from tvm.relax.frontend.nn.llm._kernel_common import _declare_length_info, _get_kv_chunk_len
    import tvm
    from tvm.backend.cuda.op import cuda_func_call
    from tvm.script import tirx as T

    from ...compiler.kv_cache import rope_angle, rotate_pair

    # CUDA's accurate cosf and sinf (with their slow path for large arguments) made the fused
    # kernel slower than the kernels it replaces; its fast ones (rope_angle is within one turn)
    target = tvm.target.Target.current(allow_none=True)
    if target is not None and target.kind.name == "cuda":
        cos = lambda a: T.call_pure_extern("float32", "__cosf", a)
        sin = lambda a: T.call_pure_extern("float32", "__sinf", a)
    else:
        cos, sin = T.cos, T.sin

    group = heads // kv_heads
    knobs = for_model(knobs, heads, kv_heads)
    blocks, vec, unroll, async_copy = knobs.blocks, knobs.vector, knobs.unroll, knobs.async_copy
    lane_bytes = vec * tvm.DataType(dtype).bits // 8  # of a row, one load
    if async_copy and lane_bytes != 16:
        raise ValueError(f"async_copy copies 16 bytes a lane: vector={vec} of {dtype} is not")

    def staged_shape(slot_count: int, final: bool) -> tuple:
        """Shared memory for the rows in flight: two stages of K and V rows (the split path with async_copy)."""
        return (2, 2, slot_count, unroll, head_dim) if async_copy and not final else (1, 1, 1, 1, 1)

    slots = knobs.threads // lanes  # rows a block works on at once
    whole_rows, whole_slots = knobs.whole_rows, knobs.whole_threads // lanes
    for count in (slots, whole_slots):
        if count & (count - 1):
            raise ValueError(f"decode attention with {count} row slots a block (threads / lanes): its slots merge in halving rounds, "
                             "which needs a power of two")
    # The split kernel's shared memory with async_copy: two steps of K and V rows, and after the loop
    # (TVM reuses the rows' memory for it) the row slots' merge state
    staged_bytes = 2 * 2 * knobs.threads * unroll * lane_bytes
    merge_bytes = heads_merged_at_once(group, slots, knobs.parallel_merge) * (slots >> halving_rounds(slots)) * (head_dim + 2) * 4
    if async_copy and max(staged_bytes, merge_bytes) > STATIC_SHARED_BYTES:
        raise ValueError(f"async_copy stages two steps of K and V rows in shared memory ({staged_bytes} bytes with threads={knobs.threads}, "
                         f"unroll={unroll}; the merge state after them: {merge_bytes}): more than the {STATIC_SHARED_BYTES} bytes "
                         "a CUDA block has without opt-in")
    fused = rope is not None
    q_rows = heads + 2 * kv_heads if fused else heads  # the fused form's first argument is q/k/v
    max_splits = -(-blocks // heads)  # the most splits the count below can give (at batch 1)
    merge_loads = min(max_splits, MERGE_LOADS)

    @T.macro
    def keep_state(state_o, state_md, at, o, m, d, g, ty, tx):
        """Row slot ty's softmax state (output, max, sum) for query head g, into shared memory at `at`."""
        for i in T.vectorized(vec):
            state_o[at, ty, tx * vec + i] = o[g, i]
        if tx == 0:
            state_md[at, ty, 0] = m[g]
            state_md[at, ty, 1] = d[g]

    # attend's steps, expanded in its scope (not hygienic: they read its variables)
    @T.macro(hygienic=False)
    def load_rows(step):
        """A lane's slice of its slot's `unroll` rows of `step` into k and v; zeros past `end`."""
        for u in T.unroll(unroll):
            row: T.let[T.int32] = begin + (step * unroll + u) * slot_count + ty
            if row < end:
                page: T.let[T.int32] = values[first_page + row // page_size]
                for i in T.vectorized(vec):
                    k[u, i] = pages[page, 0, hk, row % page_size, tx * vec + i]
                for i in T.vectorized(vec):
                    v[u, i] = pages[page, 1, hk, row % page_size, tx * vec + i]
            else:
                for i in T.vectorized(vec):
                    k[u, i] = T.Cast(dtype, 0)
                    v[u, i] = T.Cast(dtype, 0)

    @T.macro(hygienic=False)
    def copy_rows(stage, step):
        """cp.async (CUDA): a lane's slice of its slot's `unroll` rows of `step` into staged[stage],
        zero-filled past `end`; one commit group."""
        for u in T.unroll(unroll):
            row: T.let[T.int32] = begin + (step * unroll + u) * slot_count + ty
            page: T.let[T.int32] = T.if_then_else(row < end, values[first_page + row // page_size], 0)
            for kv in T.unroll(2):
                # (the shared buffer as a base and an offset: TVM's barrier planner, which cannot
                # see that a lane reads only what it copied, would want barriers in the loop)
                T.evaluate(cuda_func_call("mlcgen_cp_async16", staged.data, (((stage * 2 + kv) * slot_count + ty) * unroll + u) * head_dim + tx * vec,
                                          T.address_of(pages[page, kv, hk, row % page_size, tx * vec]), T.if_then_else(row < end, 16, 0),
                                          source_code=CP_ASYNC))
        T.evaluate(cuda_func_call("mlcgen_cp_async_commit", source_code=CP_ASYNC_COMMIT))

    @T.macro(hygienic=False)
    def use_rows(step):
        """Row slot ty's online softmax over its rows of `step` in k and v."""
        # Serial, where the other loops over the group are unrolled (so that their
        # arrays stay in registers): TVM cannot unroll a cross-lane sum; nvcc does.
        for g, u in T.grid(group, unroll):
            dot[0] = T.float32(0)
            for i in T.unroll(vec):
                dot[0] += q[g, i] * T.Cast("float32", k[u, i])
            with T.sblock("row_dot"):
                T.reads(dot[0])
                T.writes(row_sum[0])
                T.attr(T.comm_reducer(lambda x, y: x + y, [T.float32(0)]), "reduce_scope", T.int32(0))
                T.tvm_thread_allreduce(T.uint32(1), dot[0], True, row_sum[0], tx, dtype="void")
            # rows past the split: no weight (their K and V were loaded as zeros)
            score[g, u] = T.if_then_else(begin + (step * unroll + u) * slot_count + ty < end, row_sum[0], MASKED)
        for g in T.unroll(group):
            m_new[0] = m[g]
            for u in T.unroll(unroll):
                m_new[0] = T.max(m_new[0], score[g, u])
            p[0] = T.exp2(m[g] - m_new[0])
            d[g] = d[g] * p[0]
            for i in T.unroll(vec):
                o[g, i] = o[g, i] * p[0]
            for u in T.unroll(unroll):
                p[0] = T.exp2(score[g, u] - m_new[0])
                d[g] = d[g] + p[0]
                for i in T.unroll(vec):
                    o[g, i] = o[g, i] + p[0] * T.Cast("float32", v[u, i])
            m[g] = m_new[0]

    @T.macro(hygienic=False)
    def halve_slots(g):
        """Query head g's row slots halved in rounds (slot ty takes in slot ty + half's state) down to SERIAL_SLOTS."""
        for r in T.unroll(halving_rounds(slot_count)):
            if ty < slot_count >> r:
                keep_state(slot_o, slot_md, 0, o, m, d, g, ty, tx)
            T.tvm_storage_sync("shared")
            if ty < slot_count >> (r + 1):
                m_new[0] = T.max(m[g], slot_md[0, ty + (slot_count >> (r + 1)), 0])
                p[0] = T.exp2(m[g] - m_new[0])
                p_other[0] = T.exp2(slot_md[0, ty + (slot_count >> (r + 1)), 0] - m_new[0])
                d[g] = d[g] * p[0] + slot_md[0, ty + (slot_count >> (r + 1)), 1] * p_other[0]
                for i in T.unroll(vec):
                    o[g, i] = o[g, i] * p[0] + slot_o[0, ty + (slot_count >> (r + 1)), tx * vec + i] * p_other[0]
                m[g] = m_new[0]
            T.tvm_storage_sync("shared")

    @T.macro
    def attend(Q, pages, indptr, values, length_info, positions, sm_scale, out, b, hk, split, splits, slot_count, ty, tx, final):
        """A (sequence, KV head)'s rows in one split (all of them where `final`): every row slot
        an online softmax over its rows, the slots merged in shared memory; a slot per query head
        (merged at once) or slot 0 (one head after another) writes the split's partial output, max
        and sum into `out` (the workspace), or where `final` the output and log-sum-exp."""
        with T.sblock("attend"):
            T.reads()  # (inferred, the regions would name the let variables below)
            T.writes()
            q = T.sblock_alloc_buffer((group, vec), "float32", scope="local")
            k = T.sblock_alloc_buffer((unroll, vec), dtype, scope="local")
            v = T.sblock_alloc_buffer((unroll, vec), dtype, scope="local")
            score = T.sblock_alloc_buffer((group, unroll), "float32", scope="local")
            dot = T.sblock_alloc_buffer((1,), "float32", scope="local")
            row_sum = T.sblock_alloc_buffer((1,), "float32", scope="local")
            m = T.sblock_alloc_buffer((group,), "float32", scope="local")
            d = T.sblock_alloc_buffer((group,), "float32", scope="local")
            o = T.sblock_alloc_buffer((group, vec), "float32", scope="local")
            m_new = T.sblock_alloc_buffer((1,), "float32", scope="local")
            p = T.sblock_alloc_buffer((1,), "float32", scope="local")
            p_other = T.sblock_alloc_buffer((1,), "float32", scope="local")
            total = T.sblock_alloc_buffer((1,), "float32", scope="local")
            merged_o = T.sblock_alloc_buffer((vec,), "float32", scope="local")
            halving = T.meta_var(slot_count if halving_rounds(slot_count) > 0 else 1)  # slots the halving rounds keep
            slot_o = T.sblock_alloc_buffer((1, halving, head_dim), "float32", scope="shared")
            slot_md = T.sblock_alloc_buffer((1, halving, 2), "float32", scope="shared")
            final_slots = T.meta_var(slot_count >> halving_rounds(slot_count))
            merged = T.meta_var(heads_merged_at_once(group, slot_count, knobs.parallel_merge))
            final_o = T.sblock_alloc_buffer((merged, final_slots, head_dim), "float32", scope="shared")
            final_md = T.sblock_alloc_buffer((merged, final_slots, 2), "float32", scope="shared")
            staged = T.sblock_alloc_buffer(staged_shape(slot_count, final), dtype, scope="shared")
            rope_cs = T.sblock_alloc_buffer((2, vec if fused else 1), "float32", scope="local")  # a lane's cosines, sines

            first_page: T.let[T.int32] = indptr[b]
            pages_of_b: T.let[T.int32] = indptr[b + 1] - first_page
            rows: T.let[T.int32] = T.if_then_else(pages_of_b > 0, _get_kv_chunk_len(pages_of_b, page_size, b, length_info, False), 0)
            per_split: T.let[T.int32] = T.truncdiv(rows + splits - 1, splits)
            begin: T.let[T.int32] = split * per_split
            end: T.let[T.int32] = T.min(begin + per_split, rows)
            if fused:
                # A lane's angles, once for its query heads and the appended K (the same elements)
                for i in T.unroll(vec):
                    rope_cs[0, i] = cos(rope_angle(positions[b], tx * vec + i, head_dim, *rope))
                    rope_cs[1, i] = sin(rope_angle(positions[b], tx * vec + i, head_dim, *rope))
                # The step's own row (the sequence's last) is appended here, before any lane reads
                # it, by the lanes that will: slot (last - begin) % slot_count, each its own slice.
                last: T.let[T.int32] = rows - 1
                if begin <= last and last < end and ty == (last - begin) % slot_count:
                    last_page: T.let[T.int32] = values[first_page + last // page_size]
                    for i in T.serial(vec):
                        pages[last_page, 0, hk, last % page_size, tx * vec + i] = rotate_pair(
                            Q, (b, heads + hk), tx * vec + i, head_dim, rope_cs[0, i], rope_cs[1, i], dtype)
                        pages[last_page, 1, hk, last % page_size, tx * vec + i] = Q[b, heads + kv_heads + hk, tx * vec + i]
                for g in T.unroll(group):
                    for i in T.unroll(vec):
                        q[g, i] = T.Cast("float32", rotate_pair(Q, (b, hk * group + g), tx * vec + i, head_dim, rope_cs[0, i], rope_cs[1, i],
                                                                dtype)) * sm_scale * LOG2E
            else:
                for g in T.unroll(group):
                    for i in T.unroll(vec):
                        q[g, i] = T.Cast("float32", Q[b, hk * group + g, tx * vec + i]) * sm_scale * LOG2E
            for g in T.unroll(group):
                m[g] = T.float32(-5e4)
                d[g] = T.float32(0)
                for i in T.unroll(vec):
                    o[g, i] = T.float32(0)

            steps: T.let[T.int32] = T.truncdiv(per_split + slot_count * unroll - 1, slot_count * unroll)
            if async_copy and not final:  # the next step's rows copied into shared memory during this step's math
                copy_rows(0, 0)
                for step in T.serial(steps):
                    copy_rows((step + 1) % 2, step + 1)
                    T.evaluate(cuda_func_call("mlcgen_cp_async_wait_one", source_code=CP_ASYNC_WAIT))
                    for u in T.unroll(unroll):
                        for i in T.vectorized(vec):
                            k[u, i] = staged[step % 2, 0, ty, u, tx * vec + i]
                        for i in T.vectorized(vec):
                            v[u, i] = staged[step % 2, 1, ty, u, tx * vec + i]
                    use_rows(step)
                # TVM may place the slots' shared state where the rows were staged: every copy lands
                # (the last step's, all zero-fill, too) and every lane has read its rows first
                T.evaluate(cuda_func_call("mlcgen_cp_async_wait_all", source_code=CP_ASYNC_WAIT_ALL))
                T.tvm_storage_sync("shared")
            else:
                for step in T.serial(steps):
                    load_rows(step)
                    use_rows(step)

            # The block's row slots meet in shared memory: each query head's slots halve down to
            # SERIAL_SLOTS, then `merged` heads at a time keep their remaining slots' states, and slot
            # ty merges head ty's alone and writes it.
            for g0 in T.unroll(group // merged):
                for g1 in T.unroll(merged):
                    halve_slots(g0 * merged + g1)
                    if ty < final_slots:
                        keep_state(final_o, final_md, g1, o, m, d, g0 * merged + g1, ty, tx)
                T.tvm_storage_sync("shared")
                if ty < merged:
                    head: T.let[T.int32] = hk * group + g0 * merged + ty
                    m_new[0] = T.float32(-5e4)
                    for s in T.serial(final_slots):
                        m_new[0] = T.max(m_new[0], final_md[ty, s, 0])
                    total[0] = T.float32(0)
                    for i in T.serial(vec):
                        merged_o[i] = T.float32(0)
                    for s in T.serial(final_slots):
                        p[0] = T.exp2(final_md[ty, s, 0] - m_new[0])
                        total[0] = total[0] + final_md[ty, s, 1] * p[0]
                        for i in T.serial(vec):
                            merged_o[i] = merged_o[i] + final_o[ty, s, tx * vec + i] * p[0]
                    if final:
                        total[0] = T.max(total[0], T.float32(1e-30))  # an empty sequence: output 0
                        for i in T.unroll(vec):
                            merged_o[i] = merged_o[i] / total[0]
                        for i in T.vectorized(vec):
                            out[0][b, head, tx * vec + i] = T.Cast(dtype, merged_o[i])
                        if tx == 0:
                            out[1][b, head] = m_new[0] + T.log2(total[0])
                    else:
                        for i in T.vectorized(vec):
                            out[0][b, split, head, tx * vec + i] = merged_o[i]
                        if tx == 0:
                            out[1][b, split, head, 0] = m_new[0]
                            out[1][b, split, head, 1] = total[0]
                T.tvm_storage_sync("shared")

    @T.macro
    def request_outputs(loaded, part_o, b, h, tx, chunk, splits):
        """The merge's round `chunk`: up to merge_loads splits' partial outputs into registers at once."""
        for j in T.unroll(merge_loads):
            if chunk * merge_loads + j < splits:
                loaded[j] = part_o[b, chunk * merge_loads + j, h, tx]

    @T.prim_func(s_tir=True)
    def decode(Q_handle: T.handle, pages_handle: T.handle, page_indptr_handle: T.handle, page_values_handle: T.handle,
               length_info_handle: T.handle, k_rope_pos_offset_handle: T.handle, q_rope_position_handle: T.handle,
               output_handle: T.handle, lse_handle: T.handle,
               rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": NAME})
        B, nnz_pages, max_pages = T.int32(), T.int32(), T.int32()
        indptr_offset, values_offset = T.int32(), T.int32()
        k_rope_offset, q_rope_offset, length_offset = T.int32(), T.int32(), T.int32()
        Q = T.match_buffer(Q_handle, (B, q_rows, head_dim), dtype)
        pages = T.match_buffer(pages_handle, (max_pages, 2, kv_heads, page_size, head_dim), dtype)  # offset 0: vector loads need aligned rows
        indptr = T.match_buffer(page_indptr_handle, (B + 1,), "int32", elem_offset=indptr_offset)
        values = T.match_buffer(page_values_handle, (nnz_pages,), "int32", elem_offset=values_offset)
        k_rope_pos_offset = T.match_buffer(k_rope_pos_offset_handle, (B,), "int32", elem_offset=k_rope_offset)
        q_rope_position = T.match_buffer(q_rope_position_handle, (B,), "int32", elem_offset=q_rope_offset)
        output = T.match_buffer(output_handle, (B, heads, head_dim), dtype)
        lse = T.match_buffer(lse_handle, (B, heads), "float32")
        length_info = _declare_length_info(length_info_handle, B, False, length_offset)
        splits: T.let[T.int32] = T.max(1, T.min(T.ceildiv(blocks, B * heads), T.ceildiv(nnz_pages * page_size, B * MIN_SPLIT_ROWS)))
        # short sequences: one block each, no merge (whole_rows 0: the branch folds away, no kernel is built)
        if T.bool(whole_rows > 0) and nnz_pages * page_size <= B * whole_rows:
            for bh in T.thread_binding(B * kv_heads, thread="blockIdx.x"):
                for ty in T.thread_binding(whole_slots, thread="threadIdx.y"):
                    for tx in T.thread_binding(lanes, thread="threadIdx.x"):
                        attend(Q, pages, indptr, values, length_info, q_rope_position, sm_scale, (output, lse), bh // kv_heads, bh % kv_heads, 0, 1,
                               whole_slots, ty, tx, True)
        else:
            part_o = T.alloc_buffer((B, splits, heads, head_dim), "float32")
            part_md = T.alloc_buffer((B, splits, heads, 2), "float32")  # running max (base 2), sum
            for split in T.thread_binding(splits, thread="blockIdx.x"):
                for bh in T.thread_binding(B * kv_heads, thread="blockIdx.y"):
                    for ty in T.thread_binding(slots, thread="threadIdx.y"):
                        for tx in T.thread_binding(lanes, thread="threadIdx.x"):
                            attend(Q, pages, indptr, values, length_info, q_rope_position, sm_scale, (part_o, part_md), bh // kv_heads, bh % kv_heads,
                                   split, splits, slots, ty, tx, False)
            for bh in T.thread_binding(B * heads, thread="blockIdx.x"):
                for tx in T.thread_binding(head_dim, thread="threadIdx.x"):
                    with T.sblock("merge"):
                        split_m = T.sblock_alloc_buffer((max_splits,), "float32", scope="shared")
                        split_d = T.sblock_alloc_buffer((max_splits,), "float32", scope="shared")
                        top = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        total = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        loaded = T.sblock_alloc_buffer((merge_loads,), "float32", scope="local")
                        b: T.let[T.int32] = bh // heads
                        h: T.let[T.int32] = bh % heads
                        # The first merge_loads splits' outputs are requested first, then every split's max
                        # and sum at once (a thread each) into shared memory: one round of loads for up to
                        # merge_loads splits. A split at a time, this kernel took 5.8 us for Llama-3-8B's
                        # 33 splits; 16 at a time after the max and sum, 3.9 (H200, benchmarks/attention_speed.py).
                        request_outputs(loaded, part_o, b, h, tx, 0, splits)
                        for i in T.serial(T.truncdiv(max_splits + head_dim - 1, head_dim)):
                            if i * head_dim + tx < splits:
                                split_m[i * head_dim + tx] = part_md[b, i * head_dim + tx, h, 0]
                                split_d[i * head_dim + tx] = part_md[b, i * head_dim + tx, h, 1]
                        T.tvm_storage_sync("shared")
                        top[0] = T.float32(-5e4)
                        for s in T.serial(splits):
                            top[0] = T.max(top[0], split_m[s])
                        total[0] = T.float32(0)
                        acc[0] = T.float32(0)
                        for chunk in T.serial(T.truncdiv(splits + merge_loads - 1, merge_loads)):
                            if chunk > 0:
                                request_outputs(loaded, part_o, b, h, tx, chunk, splits)
                            for j in T.unroll(merge_loads):
                                if chunk * merge_loads + j < splits:
                                    weight: T.let[T.float32] = T.exp2(split_m[chunk * merge_loads + j] - top[0])
                                    total[0] = total[0] + split_d[chunk * merge_loads + j] * weight
                                    acc[0] = acc[0] + loaded[j] * weight
                        total[0] = T.max(total[0], T.float32(1e-30))  # an empty sequence: output 0
                        output[b, h, tx] = T.Cast(dtype, acc[0] / total[0])
                        if tx == 0:
                            lse[b, h] = top[0] + T.log2(total[0])

    return decode


def use_split_kv_decode(knobs: AttentionKnobs):
    """A module pass: the decode-attention PrimFunc replaced by split_kv_decode (the sliding-window
    one kept: module doc); with `fuse_rope_append`, each call of it whose query comes from a
    rope_append call (compiler/kv_cache.py) replaced by one call of the fused form."""
    import tvm
    from tvm import relax, tirx

    from ...compiler.kv_cache import bind_scalars

    @tvm.transform.module_pass(opt_level=0, name="UseSplitKVDecode")
    def replace(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("global_symbol") != NAME:
                continue
            q, pages = func.params[0].ty, func.params[1].ty  # buffer types: (batch, heads, head_dim), (.., kv_heads, ..)
            heads, head_dim, kv_heads, page_size = int(q.shape[1]), int(q.shape[2]), int(pages.shape[2]), int(pages.shape[3])
            lanes = lanes_per_row(head_dim, knobs)
            if lanes is None:
                continue
            args = (heads, kv_heads, head_dim, str(q.dtype), knobs, lanes, page_size)
            mod[gvar] = bind_scalars(split_kv_decode(*args))
            if knobs.fuse_rope_append:
                fused = lambda rope: bind_scalars(split_kv_decode(*args, rope=rope)).with_attr("global_symbol", FUSED_NAME)
                mod = relax.transform.DeadCodeElimination()(fuse_rope_append(mod, gvar, fused))
                if not any(v.same_as(gvar) for f in mod.functions.values() if isinstance(f, relax.Function)
                           for v in relax.analysis.all_global_vars(f)):
                    del mod[gvar]  # every call fused (its global symbol keeps it from the elimination)
        return mod

    return replace


FUSED_NAME = NAME + "_rope_append"


def fuse_rope_append(mod, decode, fused):
    """Calls of the PrimFunc `decode` whose query is the first output of a rope_append call that
    rotates: one call of fused((theta, scaling items)) on that call's q/k/v and pages instead
    (whose outputs are the pages, in place, and the attention's); the rope_append call is left
    unused."""
    import json

    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from ...compiler.kv_cache import ROPE_ATTR

    call_tir = tvm.ir.Op.get("relax.call_tir")
    inplace = tvm.ir.Op.get("relax.call_tir_inplace")

    @mutator
    class Fuse(PyExprMutator):
        def __init__(self):
            super().__init__(mod)
            self.bound, self.kernels = {}, {}

        def visit_var_binding_(self, binding):
            self.bound[binding.var] = binding.value
            super().visit_var_binding_(binding)

        def rope_call(self, q):
            """The rope_append call whose first output q is, and its (theta, scaling) if it rotates."""
            item = self.bound.get(q)
            if not isinstance(item, relax.TupleGetItem) or item.index != 0:
                return None, None
            call = self.bound.get(item.tuple_value)
            if not (isinstance(call, relax.Call) and call.op.same_as(inplace)):
                return None, None
            rope = json.loads(str(mod[call.args[0]].attrs.get(ROPE_ATTR, "null")))
            return call, rope

        def visit_call_(self, call):
            if not (call.op.same_as(call_tir) and call.args[0].same_as(decode)):
                return super().visit_call_(call)
            rope_append, rope = self.rope_call(call.args[1].fields[0])
            if rope is None:
                return super().visit_call_(call)
            key = json.dumps(rope)
            if key not in self.kernels:
                self.kernels[key] = self.builder_.add_func(fused((rope[0], tuple(sorted(rope[1].items())))), FUSED_NAME)
            qkv, _, pages = (self.visit_expr(a) for a in rope_append.args[1].fields)
            tables = [self.visit_expr(a) for a in call.args[1].fields[2:]]
            out = call.ty.fields
            step = self.builder_.emit(relax.call_tir_inplace(self.kernels[key], [qkv, pages, *tables], [1, -1, -1],
                                                             [pages.ty, *out]))
            return relax.Tuple([relax.TupleGetItem(step, 1), relax.TupleGetItem(step, 2)])

    fuse = Fuse()
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            fuse.builder_.update_func(gvar, fuse.visit_expr(func))
    return fuse.builder_.get()
