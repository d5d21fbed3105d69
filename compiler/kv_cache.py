"""The KV cache of the single sequence an engine serves, held by the engine and passed to the
model's prefill and decode entries as tensors.

Pages are TVM's layout, one tensor a layer: [pages, 2 (K, V), kv_heads, PAGE_SIZE, head_dim]. The
sequence owns every page in order: its token at position p sits at page p // PAGE_SIZE, row
p % PAGE_SIZE (nothing is recycled; a sliding window starts its page table further in). So the
attention kernels, TVM's and ours (targets/schedules/split_kv_decode.py), read it through the
same tables TVM's paged cache would give them, which the engine writes before each forward
(runtime/kv_cache.py).

Why not TVM's PagedKVCache: its `attention_with_fused_qkv` launches a kernel for RoPE, one for
the append and then attention (3 of a 7B layer's 7 decode kernels with ours), and its tables live
behind an object the model cannot hand to a kernel of its own. Here a forward rotates and
appends in one kernel (rope_append), then attends; where the target's preset asks (the Vulkan
presets) the decode attention takes the rotation and the append itself
(targets/schedules/split_kv_decode.py, its fused form): one kernel for all three.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.script import tirx as T

ROPE_ATTR = "mlcgen.rope"  # rope_append's [theta, scaling], or None where it does not rotate


@dataclass
class KVStep:
    """What one forward's attention reads and writes: the layers' pages (written in place) and
    the step's tables, as TVM's paged-attention kernels take them (batch 1)."""

    pages: list  # nn.Tensor a layer
    page_indptr: nn.Tensor  # [2]: the sequence's first page and its end, indices into page_values
    page_values: nn.Tensor  # [pages]: the identity, as far as the sequence's last page
    length_info: nn.Tensor  # [1]: rows in the last page; sliding windows [3, 1]: + rows skipped in the first, sink (0)
    k_rope_pos_offset: nn.Tensor  # [1]: 0 (the kernels' inline RoPE is not used)
    q_indptr: nn.Tensor  # [2]: 0 and the new tokens (prefill)
    positions: nn.Tensor  # [s]: the new tokens' positions

    @staticmethod
    def spec(layers: int, kv_heads: int, head_dim: int, page_size: int, dtype: str, sliding_window: bool, tokens) -> dict:
        page = nn.spec.Tensor(["max_pages", 2, kv_heads, page_size, head_dim], dtype)
        return {
            "pages": [page] * layers,
            "page_indptr": nn.spec.Tensor([2], "int32"),
            "page_values": nn.spec.Tensor(["num_pages"], "int32"),
            "length_info": nn.spec.Tensor([3, 1] if sliding_window and tokens == 1 else [1], "int32"),
            "k_rope_pos_offset": nn.spec.Tensor([1], "int32"),
            "q_indptr": nn.spec.Tensor([2], "int32"),
            "positions": nn.spec.Tensor([tokens], "int32"),
        }


@cache  # once a build: the module holds each kernel once
def rope_append_kernel(heads: int, kv_heads: int, head_dim: int, dtype: str, page_size: int, rope_theta: float,
                       rope_scaling: tuple, rotate: bool) -> tirx.PrimFunc:
    """qkv [s, heads + 2 kv_heads, head_dim] -> q [s, heads, head_dim] and k, v [s, kv_heads,
    head_dim] (q and k rotated; prefill's ragged attention reads them), K and V also written into
    the pages at the tokens' positions. One loop nest, so one kernel. rotate=False: qkv is
    rotated already (Phi-3's longrope)."""

    def value(qkv, positions, t, h, d):
        return rotated(qkv, positions[t], (t, h), d, head_dim, rope_theta, rope_scaling, dtype) if rotate else qkv[t, h, d]

    @T.prim_func(s_tir=True)
    def rope_append(var_qkv: T.handle, var_positions: T.handle, var_pages: T.handle, var_q: T.handle, var_k: T.handle, var_v: T.handle):
        # the RoPE a fused decode kernel must apply in its place (targets/schedules/split_kv_decode.py)
        T.func_attr({"tirx.noalias": True, ROPE_ATTR: json.dumps([rope_theta, dict(rope_scaling)] if rotate else None)})
        s, max_pages, positions_offset = T.int64(), T.int64(), T.int32()
        qkv = T.match_buffer(var_qkv, (s, heads + 2 * kv_heads, head_dim), dtype)
        positions = T.match_buffer(var_positions, (s,), "int32", elem_offset=positions_offset)
        pages = T.match_buffer(var_pages, (max_pages, 2, kv_heads, page_size, head_dim), dtype)
        q = T.match_buffer(var_q, (s, heads, head_dim), dtype)
        k = T.match_buffer(var_k, (s, kv_heads, head_dim), dtype)
        v = T.match_buffer(var_v, (s, kv_heads, head_dim), dtype)
        for t, h, d in T.grid(s, heads + kv_heads, head_dim):
            with T.sblock("rope_append"):
                vt, vh, vd = T.axis.remap("SSS", [t, h, d])
                # (single elements: dlight's analyses take no ranges; an element of each buffer)
                T.reads(qkv[vt, vh, vd], positions[vt])
                T.writes(q[vt, T.min(vh, heads - 1), vd], k[vt, T.max(vh - heads, 0), vd], v[vt, T.max(vh - heads, 0), vd],
                         pages[positions[vt] // page_size, 0, T.max(vh - heads, 0), positions[vt] % page_size, vd])
                if vh < heads:
                    q[vt, vh, vd] = value(qkv, positions, vt, vh, vd)
                else:
                    k[vt, vh - heads, vd] = value(qkv, positions, vt, vh, vd)
                    v[vt, vh - heads, vd] = qkv[vt, vh + kv_heads, vd]
                    pages[positions[vt] // page_size, 0, vh - heads, positions[vt] % page_size, vd] = k[vt, vh - heads, vd]
                    pages[positions[vt] // page_size, 1, vh - heads, positions[vt] % page_size, vd] = qkv[vt, vh + kv_heads, vd]

    return rope_append


def rotated(buffer, position, row: tuple, d, head_dim: int, theta: float, scaling: tuple, dtype: str):
    """Element d of buffer[*row, :] rotated by RoPE at `position` (the half-split pairing of
    transformers' Llama: d with d +- head_dim / 2), in dtype."""
    angle = rope_angle(position, d, head_dim, theta, scaling)
    return rotate_pair(buffer, row, d, head_dim, tirx.cos(angle), tirx.sin(angle), dtype)


def one_turn(angle):
    """A float32 angle less its whole turns, for a sine or cosine: AMD's v_sin/v_cos, which LLVM
    makes of one on gfx11 (and most likely RADV of WGSL's on the Steam Deck), take at most 256
    turns (1608 radians: RoPE's first pair at 1608 tokens), and CUDA's accurate sinf/cosf take a
    slow path for large arguments. Its rounding is that of the float32 angle itself (~2e-4 radians
    at 4096 tokens)."""
    return angle - tirx.const(2 * math.pi, "float32") * tirx.round(angle * tirx.const(1 / (2 * math.pi), "float32"))


def rope_angle(position, d, head_dim: int, theta: float, scaling: tuple):
    """RoPE's angle for element d at `position`, less its whole turns (one_turn), for its sine and cosine."""
    return one_turn(position.astype("float32") * inverse_frequency(d % (head_dim // 2), head_dim, theta, dict(scaling)))


def rotate_pair(buffer, row: tuple, d, head_dim: int, cos, sin, dtype: str):
    """Element d of buffer[*row, :] rotated by the angle whose cosine and sine are given."""
    half = head_dim // 2
    partner = tirx.if_then_else(d < half, -buffer[(*row, d + half)], buffer[(*row, d - half)])
    return (cos * buffer[(*row, d)].astype("float32") + sin * partner.astype("float32")).astype(dtype)


def inverse_frequency(i, head_dim: int, theta: float, scaling: dict):
    """RoPE's inverse frequency of pair i (a float32 expression), with Llama 3's scaling: long
    wavelengths divided by `factor`, short ones kept, those between blended."""
    inv = tirx.exp2((2 * i).astype("float32") * (-math.log2(theta) / head_dim))  # theta^(-2i/head_dim), exp2 where powf is slow
    if not scaling:
        return inv
    factor, low, high, old = (float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"))
    wavelength = 2 * math.pi / inv
    blend = (old / wavelength - low) / (high - low)
    return tirx.Select(wavelength < old / high, inv,
                       tirx.Select(wavelength > old / low, inv / factor, (1 - blend) * inv / factor + blend * inv))


@cache
def attention_kernel(kind: str, heads: int, kv_heads: int, head_dim: int, dtype: str, page_size: int,
                     sliding_window: bool, target) -> tirx.PrimFunc:
    """TVM's attention kernel `kind` for the target (its CPU kernels for llvm), scalars bound
    (bind_scalars): "decode" (paged), "prefix" (paged, a prefill's queries over the rows cached
    before it, all visible), "ragged" (a prefill's queries over its own rows, causal). The GPU
    targets' schedule passes replace the paged ones by name (targets/gpu.py)."""
    from tvm.relax.frontend.nn.llm import _decode_kernels as dk, _prefill_kernels as pk

    cpu = target.kind.name == "llvm"
    if kind == "ragged":
        make = pk._attention_prefill_ragged_cpu if cpu else pk._attention_prefill_ragged
        kernel = make(kv_heads, heads, head_dim, head_dim, dtype, {}, *(() if cpu else (target,)))
    else:
        make = {"decode": (dk._attention_decode, dk._attention_decode_cpu), "prefix": (pk._attention_prefill, pk._attention_prefill_cpu)}[kind][cpu]
        # RoPE is applied before (rope_append): no rope scaling for the kernels' unused inline mode
        kernel = make(kv_heads, heads, head_dim, dtype, sliding_window, {}, *(() if cpu else (target,)), page_size=page_size)
    return bind_scalars(kernel, causal=kind == "ragged")


@cache
def merge_kernel(heads: int, head_dim: int, dtype: str, target) -> tirx.PrimFunc:
    """TVM's merge of two attention outputs by their log-sum-exps, into the first, in place."""
    from tvm.relax.frontend.nn.llm import _decode_kernels as dk

    return dk._merge_state_inplace_cpu(dtype) if target.kind.name == "llvm" else dk._merge_state_inplace(heads, head_dim, dtype, target)


def bind_scalars(kernel: tirx.PrimFunc, causal: bool = False) -> tirx.PrimFunc:
    """An attention kernel of TVM's signature with its trailing scalars bound, so that a call
    passes tensors only (Relax's call_tir puts scalar arguments before the outputs, these kernels
    take them after): causal masking or not, no inline RoPE, softmax scale 1/sqrt(head_dim)."""
    head_dim = int(kernel.params[0].ty.shape[-1])  # q [tokens, heads, head_dim]
    values = {"causal": tirx.IntImm("int32", int(causal)), "rotary_mode": tirx.IntImm("int32", 0), "rope_scale": tirx.FloatImm("float32", 1.0),
              "rope_theta": tirx.FloatImm("float32", 1.0), "sm_scale": tirx.FloatImm("float32", head_dim**-0.5)}
    return kernel.specialize({p: values[p.name] for p in kernel.params if p.name in values})


def attend(qkv: nn.Tensor, kv: KVStep, layer_id: int, cfg, dtype: str, page_size: int, rotate: bool) -> nn.Tensor:
    """One layer's attention for qkv [1, s, heads + 2 kv_heads, head_dim], its K and V appended to
    the layer's pages: [1, s, heads * head_dim]. Decode reads every row from the pages; a prefill
    attends to its own rows in TVM's ragged kernel (twice as fast as reading them from the pages:
    docs/benchmarks.md) and to the rows cached before it in the paged one, and merges the two."""
    from tvm import target as tvm_target

    heads, kv_heads, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    target = tvm_target.Target.current()
    s = qkv.shape[1]
    rope_scaling = tuple(sorted((cfg.rope_scaling or {}).items())) if rotate else ()  # (hashable)
    rope = rope_append_kernel(heads, kv_heads, hd, dtype, page_size, cfg.rope_theta, rope_scaling, rotate)
    q, pages, k, v = nn.op.tensor_ir_inplace_op(
        rope, "rope_append", [qkv.reshape(s, heads + 2 * kv_heads, hd), kv.positions, kv.pages[layer_id]], [-1, 2, -1, -1],
        [nn.Tensor.placeholder([s, heads, hd], dtype), nn.Tensor.placeholder(kv.pages[layer_id].shape, dtype),
         nn.Tensor.placeholder([s, kv_heads, hd], dtype), nn.Tensor.placeholder([s, kv_heads, hd], dtype)])
    out = [nn.Tensor.placeholder([s, heads, hd], dtype), nn.Tensor.placeholder([s, heads], "float32")]
    tables = [kv.page_indptr, kv.page_values, kv.length_info, kv.k_rope_pos_offset, kv.positions]
    if isinstance(s, int) and s == 1:
        kernel = attention_kernel("decode", heads, kv_heads, hd, dtype, page_size, cfg.sliding_window is not None, target)
        o, _ = nn.op.tensor_ir_op(kernel, kernel.attrs["global_symbol"], [q, pages, *tables], out)
        return o.reshape(1, s, heads * hd)
    # (no window: the engine prefills several tokens only while the window would cut nothing)
    ragged = attention_kernel("ragged", heads, kv_heads, hd, dtype, page_size, False, target)
    o, lse = nn.op.tensor_ir_op(ragged, "batch_prefill_ragged_kv", [q, kv.q_indptr, k, v, kv.q_indptr, kv.positions, kv.k_rope_pos_offset], out)
    prefix = attention_kernel("prefix", heads, kv_heads, hd, dtype, page_size, False, target)
    o_prefix, lse_prefix = nn.op.tensor_ir_op(prefix, prefix.attrs["global_symbol"], [q, kv.q_indptr, pages, *tables], out)
    o, _ = nn.op.tensor_ir_inplace_op(merge_kernel(heads, hd, dtype, target), "merge_state_inplace", [o, lse, o_prefix, lse_prefix], [0, 1], out)
    return o.reshape(1, s, heads * hd)
