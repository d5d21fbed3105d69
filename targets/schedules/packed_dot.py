"""Tensor intrinsic for the decode GEMV: one lane's scale group (32 weights = 4 packed words)
dotted with its 32 activations, in packed fp16 pairs instead of one float32 weight at a time.

The description is the q4 matmul's update as DequantGEMV leaves it (compiler/quantization.py,
GroupQuant4.dequantize in float32): per weight a shift, a mask-or into a float's mantissa, a
subtract, a scale multiply and an FMA, about 5 VALU instructions. The implementation:
- `(word >> 4p) & 0x000F000F | 0x64006400` is a pair of fp16 values 1024 + code, for the codes
  p and p + 4 of the word (one mask-or for two weights); one packed fp16 subtract
  (v_pk_add_f16) makes them code - 7, exactly;
- a dot-product instruction multiplies the pair with the matching activations and adds both
  products to a float32 sum: AMD's v_dot2_f32_f16 (`llvm.amdgcn.fdot2`, gfx90a and gfx11); the
  products of fp16 values are exact in float32, so only the sums round, as before;
- the group's sum is scaled once (one FMA per 32 weights instead of a multiply per weight).
About 2.3-2.8 instructions per weight (gfx1100, gfx90a) instead of 4.4-4.9. Where no dot instruction
exists (CUDA, WebGPU) the same pairs are multiplied and added in float32: the runnable variant that
the tests (lavapipe) and benchmarks execute.
"""

from __future__ import annotations

from functools import cache

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ...compiler.quantization import FLOAT_MAGIC, GroupQuant4

GROUP = GroupQuant4.group_size  # weights per lane-step: one scale group
WORDS = GROUP // GroupQuant4.PACK
MAX_CODE = GroupQuant4.max_code
HALF_MAGIC = 0x6400  # fp16 1024.0: a 4-bit code ORed into its mantissa gives 1024 + code


def _buffers(c, x, w, s):
    """The block's regions: its row's float32 partial sum, the lane's activations and packed words
    (registers), the group's scale (global)."""
    return (T.match_buffer(c, (1, 1, 1, 1), "float32", offset_factor=1, scope="local"),
            T.match_buffer(x, (1, 1, GROUP), "float16", offset_factor=1, scope="local"),
            T.match_buffer(w, (1, WORDS), "uint32", offset_factor=1, scope="local"),
            T.match_buffer(s, (1, 1), "float16", offset_factor=1))


def _description():
    @T.prim_func(s_tir=True)
    def description(c: T.handle, x: T.handle, w: T.handle, s: T.handle):
        C, X, W, S = T.meta_var(_buffers(c, x, w, s))
        with T.sblock("root"):
            T.reads(C[0, 0, 0, 0], X[0, 0, 0:GROUP], W[0, 0:WORDS], S[0, 0])
            T.writes(C[0, 0, 0, 0])
            for k in range(GROUP):
                with T.sblock("update"):
                    vk = T.axis.reduce(GROUP, k)
                    C[0, 0, 0, 0] = C[0, 0, 0, 0] + T.Cast("float32", X[0, 0, vk]) * (
                        (T.reinterpret("float32", W[0, vk // 8] >> T.Cast("uint32", vk % 8 * 4) & T.uint32(15) | T.uint32(FLOAT_MAGIC))
                         - T.float32(2**23 + MAX_CODE)) * T.Cast("float32", S[0, 0]))

    return description


def _fp16_pair(bits):
    """The two codes' fp16 values 1024 + code, minus 1024 + MAX_CODE: one packed subtract."""
    return tirx.reinterpret("float16x2", bits) - tirx.Broadcast(tirx.const(1024 + MAX_CODE, "float16"), 2)


def _wgsl_pair(bits):
    """The same in float32 for WGSL, whose compiler (naga) mistypes bitcast<vec2<f16>>(u32):
    unpack2x16float reads the two fp16 halves exactly."""
    pair = tirx.call_pure_extern("float32x2", "unpack2x16float", bits)
    return pair - tirx.Broadcast(tirx.const(1024 + MAX_CODE, "float32"), 2)


def _amd_dot2(a, b, acc):
    """v_dot2_f32_f16: acc + a.x * b.x + a.y * b.y in float32."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.amdgcn.fdot2", a, b, acc, tirx.const(False, "bool"))


def _float32_dot2(a, b, acc):
    def lane(v, i):
        return tirx.Shuffle([v], [i]).astype("float32")

    return acc + lane(a, 0) * lane(b, 0) + lane(a, 1) * lane(b, 1)


def _group_sum(X, W, pair, dot2):
    """sum over the group of x * (code - MAX_CODE), in pairs (code p, code p + 4) of each word."""
    acc = tirx.const(0.0, "float32")
    for j in range(WORDS):
        for p in range(4):
            bits = (W[0, j] >> tirx.const(4 * p, "uint32")) & tirx.const(0x000F000F, "uint32") | tirx.const(HALF_MAGIC * 0x10001, "uint32")
            activations = tirx.Shuffle([X[0, 0, 8 * j + p], X[0, 0, 8 * j + p + 4]], [0, 1])
            acc = dot2(activations, pair(bits), acc)
    return acc


def _implementation(pair, dot2):
    @T.prim_func(s_tir=True)
    def implementation(c: T.handle, x: T.handle, w: T.handle, s: T.handle):
        C, X, W, S = T.meta_var(_buffers(c, x, w, s))
        with T.sblock("root"):
            T.reads(C[0, 0, 0, 0], X[0, 0, 0:GROUP], W[0, 0:WORDS], S[0, 0])
            T.writes(C[0, 0, 0, 0])
            group_sum = T.meta_var(_group_sum(X, W, pair, dot2))
            C[0, 0, 0, 0] = C[0, 0, 0, 0] + group_sum * T.Cast("float32", S[0, 0])

    return implementation


INTRINSICS = {  # target kind -> (pair, dot2); any other kind: fp16 pairs, float32 multiply-adds
    "rocm": (_fp16_pair, _amd_dot2),
    "webgpu": (_wgsl_pair, _float32_dot2),
    "other": (_fp16_pair, _float32_dot2),
}


@cache
def _registered(kind: str) -> str:
    """Registers the intrinsic on first use: parsing its TVMScript takes ~1 s, which every import
    of the targets (a CPU build included) paid when it happened at import."""
    name = f"mlcgen_q4_group_dot2_{kind}"
    TensorIntrin.register(name, _description(), _implementation(*INTRINSICS[kind]), override=True)
    return name


def intrinsic_for(target) -> str:
    kind = target.kind.name
    return _registered(kind if kind in INTRINSICS else "other")
