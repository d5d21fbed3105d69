"""More thread blocks for TVM's prefill-attention kernels on GPUs with many compute units.

A prefill attends with two of TVM's kernels (compiler/kv_cache.py `attend`):
`batch_prefill_ragged_kv` over its own tokens (causal) and `batch_prefill_paged_kv` over the rows
cached before it. Each is launched with 16 blocks per KV head (its NUM_BLKS), and a block walks
the 32-row query tiles of its head one after another. A grouped model has few KV heads: Llama-3-8B's 8 give 128 blocks of
4 warps for an H200's 132 SMs, and its 512-token prefill spent twice the attention time of
Llama-2-7B's (32 heads, 512 blocks) on the same work (docs/benchmarks.md).

`use_prefill_blocks(blocks)` regenerates those kernels with TVM's own generators, asking for at
least `blocks` blocks in all (never fewer than TVM's 16 per KV head): the tiles are then shared by
more blocks; blocks without a tile return at once. Rotary embedding is applied before these
kernels (rope_append: their rotary_mode is 0), so they are generated without the model's rope
scaling, as the decode kernel is (schedules/split_kv_decode.py). No windowed form: the engine
prefills several tokens only while a sliding window cuts nothing (runtime/engine.py).
"""

from __future__ import annotations

import math
from unittest import mock

TVM_BLOCKS_PER_KV_HEAD = 16  # NUM_BLKS in TVM's prefill kernel configuration
RAGGED = "batch_prefill_ragged_kv"
PAGED = "batch_prefill_paged_kv"


def blocks_per_kv_head(kv_heads: int, blocks: int) -> int:
    return max(TVM_BLOCKS_PER_KV_HEAD, math.ceil(blocks / kv_heads))


def prefill_kernel(name: str, func, blocks: int, target, tiles: tuple[int, int, int] | None = None):
    """TVM's kernel `name` (a PrimFunc of the KV cache: ragged or paged prefill) regenerated with
    blocks_per_kv_head blocks for each KV head; with `tiles` (warps, query rows, KV rows per tile)
    in place of TVM's choice (benchmarks/attention_speed.py sweeps them)."""
    from tvm.relax.frontend.nn.llm import _prefill_kernels as tvm_prefill

    q, kv = func.params[0].ty, func.params[2].ty  # ragged: q, q_indptr, k, v; paged: q, q_indptr, pages
    heads, head_dim, dtype = int(q.shape[1]), int(q.shape[2]), str(q.dtype)
    kv_heads = int(kv.shape[1] if name == RAGGED else kv.shape[2])
    config = tvm_prefill._get_prefill_kernel_config

    def more_blocks(*args, **kwargs):
        values = config(*args, **kwargs)
        if len(values) != 8:  # TVM 0.27's (NUM_BLKS, LOAD_VEC, group, bdx, warps, tile_x, tile_y, tile_z)
            raise RuntimeError(f"TVM's prefill kernel configuration is not the one targets/schedules/prefill_attention.py knows: {values}")
        _, load_vec, group, lanes, warps, tile_x, tile_y, tile_z = values
        if tiles:
            warps, tile_x, tile_z = tiles
        return blocks_per_kv_head(kv_heads, blocks), load_vec, group, lanes, warps, tile_x, tile_y, tile_z

    with mock.patch.object(tvm_prefill, "_get_prefill_kernel_config", more_blocks):
        if name == RAGGED:
            v = func.params[3].ty
            return tvm_prefill._attention_prefill_ragged(kv_heads, heads, head_dim, int(v.shape[2]), dtype, {}, target)
        return tvm_prefill._attention_prefill(kv_heads, heads, head_dim, dtype, False, {}, target, page_size=int(kv.shape[3]))


def use_prefill_blocks(blocks: int | None):
    """A module pass: the KV cache's prefill-attention PrimFuncs regenerated for at least `blocks`
    thread blocks (None: TVM's kernels unchanged)."""
    import tvm
    from tvm import tirx

    from ...compiler.kv_cache import bind_scalars

    @tvm.transform.module_pass(opt_level=0, name="UsePrefillBlocks")
    def replace(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if blocks is None:
            return mod
        target = tvm.target.Target.current()
        for gvar, func in list(mod.functions_items()):
            name = func.attrs.get("global_symbol") if isinstance(func, tirx.PrimFunc) else None
            if name in (RAGGED, PAGED):  # (the ragged kernel is the causal one: compiler/kv_cache.py)
                mod[gvar] = bind_scalars(prefill_kernel(name, func, blocks, target), causal=name == RAGGED)
        return mod

    return replace
