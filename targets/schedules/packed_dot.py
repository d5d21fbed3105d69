"""Tensor intrinsic for the decode GEMV: one lane's scale group (32 weights = 4 packed words)
dotted with its 32 activations, in packed fp16 pairs instead of one float32 weight at a time.

The description is the q4 matmul's update as DequantGEMV leaves it (compiler/quantization.py,
GroupQuant4.dequantize in float32): per weight a shift, a mask-or into a float's mantissa, a
subtract, a scale multiply and an FMA, about 5 VALU instructions. The implementation:
- `word & 0x000F000F | 0x64006400` is a pair of fp16 values 1024 + code, for the codes 0 and 4
  of the word (one mask-or for two weights), and the same of `word >> 8` for codes 2 and 6; one
  packed fp16 subtract (v_pk_add_f16) makes them code - 7, exactly; codes 1/5 and 3/7 take the
  mask 0x00F000F0 (1024 + 16 code) and one packed multiply-add (times 1/16, minus 71), so a word
  takes one shift;
- a dot-product instruction multiplies the pair with the matching activations and adds both
  products to a float32 sum: AMD's v_dot2_f32_f16 (`llvm.amdgcn.fdot2`, gfx90a and gfx11); the
  products of fp16 values are exact in float32, so only the sums round, as before;
- the group's sum is scaled once (one FMA per 32 weights instead of a multiply per weight).
About 2.2-2.6 instructions per weight (gfx1100, gfx90a) instead of 4.5-5.0
(benchmarks/rocm_gemv_alu.py). Where no dot instruction exists (WebGPU, and CUDA without
`fp16_products`) the same pairs are multiplied and added in float32: the runnable variant that the
tests (lavapipe) execute. CUDA's preset sums each word's 8 products
in fp16 pairs (HFMA2) and only then in float32, with one LOP3 per code pair (inline PTX) and one
shift per word, in a CUDA function of ours (mlcgen_q4_word_dot) so that each fp16 operation is
one packed instruction: 2.82 instructions per weight on sm_90 against 3.57 when TVM printed the
same float16x2 arithmetic (lane by lane, which nvcc compiled to scalar fp16;
benchmarks/cuda_gemv_sass.py). The GEMV is bound by
instruction issue as much as by memory (docs/benchmarks.md, session 18).
WGSL's vectors stop at 4 lanes, so fp16 activations load 8 bytes at a time; `activation_words`
loads a lane's group as 16-byte words through a uint32 view and converts it to float32 once for all
of the lane's rows (the `_words` intrinsics read those float32 values).
With int8 activations (compiler/int8_activations.py) a group is instead 8 integer dot products of
4 weight codes with 4 activation codes (`int8_intrinsic_for`: WGSL dot4I8Packed, CUDA __dp4a,
gfx90a v_dot4_i32_i8, gfx11 v_dot4_i32_iu8), about 1 instruction per 2 weights.
`strong_load`: CUDA loads into registers that ptxas leaves where they are written (the GEMV's early
loads of its weights and scales).
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


def _buffers(c, x, w, s, sum_dims, x_dtype="float16", scale_scope="global"):
    """The block's regions: its row's float32 partial sum (a point of the lanes' sums: lane, batch,
    token, row; the gate/up-paired GEMV splits the row in two), the lane's activations (fp16, or
    float32 where they are converted as they are loaded: activation_words) and packed words
    (registers), the group's scale (global, or registers where the GEMV loads it early)."""
    return (T.match_buffer(c, (1,) * sum_dims, "float32", offset_factor=1, scope="local"),
            T.match_buffer(x, (1, 1, GROUP), x_dtype, offset_factor=1, scope="local"),
            T.match_buffer(w, (1, WORDS), "uint32", offset_factor=1, scope="local"),
            T.match_buffer(s, (1, 1), "float16", offset_factor=1, scope=scale_scope))


def _description(sum_dims: int, words: bool = False, scale_scope: str = "global"):
    """The q4 update of one group. With `words`, the activation's cache holds float32 values
    converted from fp16 (unsafe_set_dtype leaves the matmul reading them back as fp16)."""
    point = (0,) * sum_dims
    x_dtype = "float32" if words else "float16"

    def activation(X, vk):
        return T.Cast("float16", X[0, 0, vk]) if words else X[0, 0, vk]

    @T.prim_func(s_tir=True)
    def description(c: T.handle, x: T.handle, w: T.handle, s: T.handle):
        C, X, W, S = T.meta_var(_buffers(c, x, w, s, sum_dims, x_dtype, scale_scope))
        with T.sblock("root"):
            T.reads(C[point], X[0, 0, 0:GROUP], W[0, 0:WORDS], S[0, 0])
            T.writes(C[point])
            for k in range(GROUP):
                with T.sblock("update"):
                    vk = T.axis.reduce(GROUP, k)
                    C[point] = C[point] + T.Cast("float32", activation(X, vk)) * (
                        (T.reinterpret("float32", W[0, vk // 8] >> T.Cast("uint32", vk % 8 * 4) & T.uint32(15) | T.uint32(FLOAT_MAGIC))
                         - T.float32(2**23 + MAX_CODE)) * T.Cast("float32", S[0, 0]))

    return description


def _fp16_pair(bits, next_nibble: bool):
    """The two codes' fp16 values minus MAX_CODE, exactly: 1024 + code minus 1024 + MAX_CODE (one
    packed subtract), or for the next nibble 1024 + 16 code, times 1/16 minus 64 + MAX_CODE (one
    packed multiply-add)."""
    pair = tirx.reinterpret("float16x2", bits)
    return _minus_bias(pair, next_nibble, "float16")


def _wgsl_pair(bits, next_nibble: bool):
    """The same in float32 for WGSL, whose compiler (naga) mistypes bitcast<vec2<f16>>(u32):
    unpack2x16float reads the two fp16 halves exactly."""
    return _minus_bias(tirx.call_pure_extern("float32x2", "unpack2x16float", bits), next_nibble, "float32")


def _minus_bias(pair, next_nibble: bool, dtype: str):
    def const(value):
        return tirx.Broadcast(tirx.const(value, dtype), 2)

    if next_nibble:
        return pair * const(1 / 16) - const(64 + MAX_CODE)
    return pair - const(1024 + MAX_CODE)


def _amd_dot2(a, b, acc):
    """v_dot2_f32_f16: acc + a.x * b.x + a.y * b.y in float32."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.amdgcn.fdot2", a, b, acc, tirx.const(False, "bool"))


def _float32_dot2(a, b, acc):
    def lane(v, i):
        return tirx.Shuffle([v], [i]).astype("float32")

    return acc + lane(a, 0) * lane(b, 0) + lane(a, 1) * lane(b, 1)


def _activation_pair(X, j, p):
    """The activations of word j's codes p and p + 4."""
    return tirx.Shuffle([X[0, 0, 8 * j + p], X[0, 0, 8 * j + p + 4]], [0, 1])


def _pairs(X, W, j):
    """Word j's four (activation pair, code pair bits, whether the codes are the next nibble)
    operands, codes p and p + 4 of the word in pair p, with one shift per word: codes 0/4 and 2/6
    sit in the low nibble of each 16-bit half of the word and of the word >> 8, codes 1/5 and 3/7
    in the next nibble (1024 + 16 code once ORed into the fp16 magic)."""
    for p in range(4):
        word = W[0, j] if p < 2 else W[0, j] >> tirx.const(8, "uint32")
        mask = 0x00F000F0 if p % 2 else 0x000F000F
        bits = word & tirx.const(mask, "uint32") | tirx.const(HALF_MAGIC * 0x10001, "uint32")
        yield _activation_pair(X, j, p), bits, bool(p % 2)


def _group_sum(X, W, pair, dot2):
    """sum over the group of x * (code - MAX_CODE), in pairs (code p, code p + 4) of each word."""
    acc = tirx.const(0.0, "float32")
    for j in range(WORDS):
        for activations, bits, next_nibble in _pairs(X, W, j):
            acc = dot2(activations, pair(bits, next_nibble), acc)
    return acc


WORD_DOT_SOURCE = """
template <unsigned mask>
__forceinline__ __device__ unsigned mlcgen_magic_pair(unsigned a) {{
  unsigned r;  // (a & mask) | fp16 1024 pair in one LOP3: C would give two, one per immediate
  asm("lop3.b32 %0, %1, %2, {magic:#010x}, 0xea;" : "=r"(r) : "r"(a), "n"(mask));
  return r;
}}

__forceinline__ __device__ __half2 mlcgen_bits_half2(unsigned a) {{
  return *reinterpret_cast<__half2*>(&a);
}}

// Two activations from two fp16 pairs (x0 and x4 from x01 and x45: selector 0x5410).
__forceinline__ __device__ __half2 mlcgen_activation_pair(__half2 a, __half2 b, unsigned selector) {{
  unsigned u = __byte_perm(*reinterpret_cast<unsigned*>(&a), *reinterpret_cast<unsigned*>(&b), selector);
  return *reinterpret_cast<__half2*>(&u);
}}

// A packed word's 8 codes dotted with their 8 activations: the code pairs as _pairs makes them
// (codes p and p + 4 in pair p, one shift per word), the products summed in fp16 pairs (one
// HFMA2 per 2 weights), then the pair's halves in float32.
__forceinline__ __device__ float mlcgen_q4_word_dot(unsigned w, __half2 x01, __half2 x23, __half2 x45, __half2 x67) {{
  const __half2 bias = __float2half2_rn({low_bias}.0f), sixteenth = __float2half2_rn(0.0625f);
  const __half2 next_bias = __float2half2_rn(-{next_bias}.0f);
  unsigned high = w >> 8;
  __half2 c0 = __hsub2(mlcgen_bits_half2(mlcgen_magic_pair<0x000f000f>(w)), bias);
  __half2 c1 = __hfma2(mlcgen_bits_half2(mlcgen_magic_pair<0x00f000f0>(w)), sixteenth, next_bias);
  __half2 c2 = __hsub2(mlcgen_bits_half2(mlcgen_magic_pair<0x000f000f>(high)), bias);
  __half2 c3 = __hfma2(mlcgen_bits_half2(mlcgen_magic_pair<0x00f000f0>(high)), sixteenth, next_bias);
  __half2 sum = __hmul2(mlcgen_activation_pair(x01, x45, 0x5410), c0);
  sum = __hfma2(mlcgen_activation_pair(x01, x45, 0x7632), c1, sum);
  sum = __hfma2(mlcgen_activation_pair(x23, x67, 0x5410), c2, sum);
  sum = __hfma2(mlcgen_activation_pair(x23, x67, 0x7632), c3, sum);
  float2 f = __half22float2(sum);
  return f.x + f.y;
}}
""".format(magic=HALF_MAGIC * 0x10001, low_bias=1024 + MAX_CODE, next_bias=64 + MAX_CODE)


def _group_sum_fp16_words(X, W):
    """The same with each word's 8 products summed in fp16 pairs (packed HFMA2 on CUDA), then added
    to the float32 sum (mlcgen_q4_word_dot, written in CUDA so that every fp16 operation is a
    packed pair: TVM prints float16x2 arithmetic lane by lane, which nvcc leaves as scalar fp16).
    A lane sums 4 products in fp16 (11-bit mantissa) before they meet float32."""
    from tvm.backend.cuda.op import cuda_func_call

    acc = tirx.const(0.0, "float32")
    for j in range(WORDS):
        activations = [X.vload([0, 0, 8 * j + i], "float16x2") for i in range(0, 8, 2)]
        acc = acc + cuda_func_call("mlcgen_q4_word_dot", W[0, j], *activations, source_code=WORD_DOT_SOURCE,
                                   return_type="float32")
    return acc


def _implementation(group_sum_of, sum_dims: int, words: bool = False, scale_scope: str = "global"):
    point = (0,) * sum_dims

    @T.prim_func(s_tir=True)
    def implementation(c: T.handle, x: T.handle, w: T.handle, s: T.handle):
        C, X, W, S = T.meta_var(_buffers(c, x, w, s, sum_dims, "float32" if words else "float16", scale_scope))
        with T.sblock("root"):
            T.reads(C[point], X[0, 0, 0:GROUP], W[0, 0:WORDS], S[0, 0])
            T.writes(C[point])
            group_sum = T.meta_var(group_sum_of(X, W))
            C[point] = C[point] + group_sum * T.Cast("float32", S[0, 0])

    return implementation


GROUP_SUMS = {  # (target kind, fp16 products) -> the group's sum; any other kind: as "cuda"
    ("rocm", False): lambda X, W: _group_sum(X, W, _fp16_pair, _amd_dot2),
    ("webgpu", False): lambda X, W: _group_sum(X, W, _wgsl_pair, _float32_dot2),
    ("cuda", False): lambda X, W: _group_sum(X, W, _fp16_pair, _float32_dot2),
    ("cuda", True): _group_sum_fp16_words,
}


@cache
def _registered(kind: str, fp16_products: bool, sum_dims: int, words: bool, scale_scope: str) -> str:
    """Registers the intrinsic on first use: parsing its TVMScript takes ~1 s, which every import
    of the targets (a CPU build included) paid when it happened at import."""
    name = (f"mlcgen_q4_group_dot2_{kind}{'_fp16' if fp16_products else ''}{'_words' if words else ''}"
            f"_{scale_scope}_scale_{sum_dims}d")
    TensorIntrin.register(name, _description(sum_dims, words, scale_scope),
                          _implementation(GROUP_SUMS[kind, fp16_products], sum_dims, words, scale_scope), override=True)
    return name


def intrinsic_for(target, fp16_products: bool = False, sum_dims: int = 4, words: bool = False,
                  scale_scope: str = "global") -> str:
    kind = target.kind.name if target.kind.name in ("rocm", "webgpu") else "cuda"
    if (kind, fp16_products) not in GROUP_SUMS:
        raise ValueError(f"fp16 products are implemented for CUDA only, not for {target.kind.name}")
    if words and kind != "webgpu":
        raise ValueError(f"activation words are a WGSL form (its vectors stop at 4 lanes), not for {target.kind.name}")
    return _registered(kind, fp16_products, sum_dims, words, scale_scope)


@cache
def activation_words() -> str:
    """A lane's group of activations loaded as 4 x vec4<u32> (16-byte loads: WGSL vectors stop at 4
    lanes, so fp16 activations would load 8 bytes at a time) through a uint32 view of the same
    buffer, and converted to float32 pairs with unpack2x16float: the cache of
    `x_local[i] = float32(x[i])` that DequantGEMV makes with `activation_words`."""
    name = "mlcgen_q4_activation_words"

    def buffers(g, l):  # the group in global memory (fp16; an even offset: whole words), its float32 cache
        return (T.match_buffer(g, (1, 1, GROUP), "float16", offset_factor=2),
                T.match_buffer(l, (1, 1, GROUP), "float32", offset_factor=1, scope="local"))

    @T.prim_func(s_tir=True)
    def description(g: T.handle, l: T.handle):
        G, L = T.meta_var(buffers(g, l))
        with T.sblock("root"):
            T.reads(G[0, 0, 0:GROUP])
            T.writes(L[0, 0, 0:GROUP])
            for i in range(GROUP):
                with T.sblock("load"):
                    vi = T.axis.spatial(GROUP, i)
                    L[0, 0, vi] = T.Cast("float32", G[0, 0, vi])

    @T.prim_func(s_tir=True)
    def implementation(g: T.handle, l: T.handle):
        G, L = T.meta_var(buffers(g, l))
        with T.sblock("root"):
            T.reads(G[0, 0, 0:GROUP])
            T.writes(L[0, 0, 0:GROUP])
            Gw = T.decl_buffer((GROUP // 2,), "uint32", data=G.data, elem_offset=G.elem_offset // 2)
            for q in T.unroll(GROUP // 8):  # unrolled: the word's lane in the vector is a constant
                for c in T.unroll(4):
                    T.buffer_store(L, T.call_pure_extern("float32x2", "unpack2x16float", T.Shuffle([Gw.vload([4 * q], "uint32x4")], [c])),
                                   [0, 0, T.Ramp(8 * q + 2 * c, 1, 2)])

    TensorIntrin.register(name, description, implementation, override=True)
    return name


STRONG_LOADS = {  # (dtype, lanes) -> the CUDA function (its source emitted once per name), its value's dtype
    ("uint32", 4): ("mlcgen_strong_load_words", "uint32x4", """
__forceinline__ __device__ uint4 mlcgen_strong_load_words(const uint* p) {
  uint4 r;  // ld.relaxed: ptxas keeps it where it is written, before the block's barrier
  asm volatile("ld.relaxed.gpu.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
"""),
    ("float16", 1): ("mlcgen_strong_load_half", "float16", """
__forceinline__ __device__ half mlcgen_strong_load_half(const half* p) {
  unsigned short r;
  asm volatile("ld.relaxed.gpu.global.u16 %0, [%1];" : "=h"(r) : "l"(p));
  return __ushort_as_half(r);
}
"""),
}


@cache
def strong_load(dtype: str, lanes: int) -> str:
    """CUDA: `lanes` values of `dtype` copied from global memory into registers by a relaxed
    (strong) load. ptxas moves ordinary loads of read-only data wherever its register budget
    likes, past the block's barrier and deep into the arithmetic (a GEMV's weights and scales in
    three dependent rounds of memory latency, docs/benchmarks.md, session 29); strong loads stay
    where they are written, and the block's barrier after them most likely waits for them. They
    bypass L1, which a weight stream read once does not use."""
    function, value, source = STRONG_LOADS[dtype, lanes]
    name = f"mlcgen_strong_load_{dtype}x{lanes}"

    def buffers(g, l):
        return (T.match_buffer(g, (lanes,), dtype, offset_factor=lanes),
                T.match_buffer(l, (lanes,), dtype, offset_factor=lanes, scope="local"))

    @T.prim_func(s_tir=True)
    def description(g: T.handle, l: T.handle):
        G, L = T.meta_var(buffers(g, l))
        with T.sblock("root"):
            T.reads(G[0:lanes])
            T.writes(L[0:lanes])
            for i in range(lanes):
                if lanes == 1:  # a unit loop's block: its iterator is folded away
                    with T.sblock("load"):
                        L[0] = G[0]
                else:
                    with T.sblock("load"):
                        vi = T.axis.spatial(lanes, i)
                        L[vi] = G[vi]

    from tvm.backend.cuda.op import cuda_func_call

    @T.prim_func(s_tir=True)
    def implementation(g: T.handle, l: T.handle):
        G, L = T.meta_var(buffers(g, l))
        with T.sblock("root"):
            T.reads(G[0:lanes])
            T.writes(L[0:lanes])
            T.buffer_store(L, cuda_func_call(function, G.access_ptr("r"), source_code=source, return_type=value),
                           [T.Ramp(0, 1, lanes)] if lanes > 1 else [0])

    TensorIntrin.register(name, description, implementation, override=True)
    return name


def _int8_buffers(c, xq, w, xd, s, sum_dims):
    """The int8 form's regions (compiler/int8_activations.py): the row's float32 partial sum, the
    group's 8 activation words and 4 weight words (registers), the group's activation scale and
    7 * code sum, the weight's scale."""
    return (T.match_buffer(c, (1,) * sum_dims, "float32", offset_factor=1, scope="local"),
            T.match_buffer(xq, (2 * WORDS,), "uint32", offset_factor=1, scope="local"),
            T.match_buffer(w, (1, WORDS), "uint32", offset_factor=1, scope="local"),
            T.match_buffer(xd, (1, 2), "float32", offset_factor=1),
            T.match_buffer(s, (1, 1), "float16", offset_factor=1))


def _int8_description(sum_dims: int):
    """The int8 matmul's update (int8_activations.matmul_te) for one group, as the GEMV leaves it."""
    point = (0,) * sum_dims

    @T.prim_func(s_tir=True)
    def description(c: T.handle, xq: T.handle, w: T.handle, xd: T.handle, s: T.handle):
        C, XQ, W, XD, S = T.meta_var(_int8_buffers(c, xq, w, xd, s, sum_dims))
        with T.sblock("root"):
            T.reads(C[point], W[0, 0:WORDS], XQ[0:2 * WORDS], XD[0, 0:2], S[0, 0])  # in the order the GEMV reads them
            T.writes(C[point])
            for k in range(GROUP):
                with T.sblock("update"):
                    vk = T.axis.reduce(GROUP, k)
                    code = T.meta_var(T.Cast("float32", W[0, vk // 8] >> T.Cast("uint32", vk % 8 * 4) & T.uint32(15)))
                    activation = T.meta_var(T.Cast("float32", T.Cast("int32", XQ[vk % 2 * 4 + vk // 8] << T.Cast("uint32", 24 - vk % 8 // 2 * 8)) >> 24))
                    C[point] = C[point] + (code * activation - XD[0, 1] * T.float32(1 / GROUP)) * (XD[0, 0] * T.Cast("float32", S[0, 0]))

    return description


def _wgsl_dot4(a, b, acc):
    return acc + tirx.call_pure_extern("int32", "dot4I8Packed", a, b)


def _cuda_dot4(a, b, acc):
    return tirx.call_pure_extern("int32", "__dp4a", a.astype("int32"), b.astype("int32"), acc)


def _cdna_dot4(a, b, acc):
    """gfx90a's v_dot4_i32_i8 (the weight codes, 0..14, read the same as signed bytes)."""
    return tirx.call_llvm_pure_intrin("int32", "llvm.amdgcn.sdot4", a.astype("int32"), b.astype("int32"), acc, tirx.const(False, "bool"))


def _rdna3_dot4(a, b, acc):
    """gfx11's v_dot4_i32_iu8 (gfx11 has no signed-by-signed form): unsigned weight codes, signed activation."""
    return tirx.call_llvm_pure_intrin("int32", "llvm.amdgcn.sudot4", tirx.const(False, "bool"), a.astype("int32"),
                                      tirx.const(True, "bool"), b.astype("int32"), acc, tirx.const(False, "bool"))


INT8_DOT4 = {"webgpu": _wgsl_dot4, "cuda": _cuda_dot4, "gfx90a": _cdna_dot4, "gfx11": _rdna3_dot4}


def _int8_implementation(dot4, sum_dims: int):
    """A group in 8 dot4s of 4 weight codes (masked, or shifted and masked, from a word) with the
    4 activation codes in the matching bytes, then the 7 * sum(q) taken off once."""
    point = (0,) * sum_dims
    mask = tirx.const(0x0F0F0F0F, "uint32")

    @T.prim_func(s_tir=True)
    def implementation(c: T.handle, xq: T.handle, w: T.handle, xd: T.handle, s: T.handle):
        C, XQ, W, XD, S = T.meta_var(_int8_buffers(c, xq, w, xd, s, sum_dims))
        with T.sblock("root"):
            T.reads(C[point], W[0, 0:WORDS], XQ[0:2 * WORDS], XD[0, 0:2], S[0, 0])  # in the order the GEMV reads them
            T.writes(C[point])
            total = T.meta_var(_int8_group(dot4, XQ, W, mask))
            C[point] = C[point] + (T.Cast("float32", total) - XD[0, 1]) * (XD[0, 0] * T.Cast("float32", S[0, 0]))

    return implementation


def _int8_group(dot4, XQ, W, mask):
    acc = tirx.const(0, "int32")
    for j in range(WORDS):
        acc = dot4(W[0, j] & mask, XQ[j], acc)
        acc = dot4((W[0, j] >> tirx.const(4, "uint32")) & mask, XQ[WORDS + j], acc)
    return acc


def int8_intrinsic_for(target, sum_dims: int = 4) -> str:
    """The int8 form's group (compiler/int8_activations.py) for `target`: by kind, and for ROCm by
    GPU family."""
    kind = target.kind.name
    if kind == "rocm":
        mcpu = str(target.attrs["mcpu"])
        kind = "gfx11" if mcpu.startswith("gfx11") else mcpu
    if kind not in INT8_DOT4:
        raise NotImplementedError(f"int8 activations are implemented for {', '.join(INT8_DOT4)}, not for {kind}")
    return _int8_registered(kind, sum_dims)


@cache
def _int8_registered(kind: str, sum_dims: int) -> str:
    name = f"mlcgen_q4_int8_dot4_{kind}_{sum_dims}d"
    TensorIntrin.register(name, _int8_description(sum_dims), _int8_implementation(INT8_DOT4[kind], sum_dims), override=True)
    return name
