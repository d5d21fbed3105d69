"""Decode matmuls on int8 activations: 4-bit weights times int8 codes in integer dot products.

A decode GEMV's ALU work per weight is its dequantize and a float multiply-add: ~3 instructions
where the 4-bit code is turned into a float. With the activation quantized to int8 once per matmul
(as llama.cpp's q8_1), one dot4 instruction (WGSL dot4I8Packed, CUDA __dp4a) multiplies 4 codes
with 4 activation codes and adds them: a q4 word's 8 codes take a mask, a shift and two dot4s.
On the H200's Vulkan driver a hand-written WGSL GEMV so reaches 2720 GB/s against 1850 for the
best float form (benchmarks/wgsl_gemv.py, docs/benchmarks.md). The activation's rounding to int8
(relative error ~5e-3 per matmul) is the price; weights and everything else are as before.

Per group g of 32 activations x (scale d = max|x| / 127, codes q = round(x * 127 / max|x|)):
    xq uint32 [K/4]      words 8g + j (j < 4) hold the codes of elements 32g + 8j + 0, 2, 4, 6
                         (lowest byte first), words 8g + 4 + j those of 32g + 8j + 1, 3, 5, 7:
                         the byte order of q4 word j's codes masked with 0x0F0F0F0F, and shifted
                         right by 4 first;
    xd float32 [K/32, 2] d and 7 * sum(q).
A group's dot with a q4 row (codes c, scale s) is then
    d * s * (sum_j dot4(w_j & 0x0F0F0F0F, xq_j) + dot4(w_j >> 4 & 0x0F0F0F0F, xq_{4+j}) - 7 sum(q))
since the weight is (c - 7) * s. The TE below states it per element, with the 7 sum(q) spread
over the group's 32 terms; the GPU schedule (targets/schedules/packed_dot.py) computes a group
at a time with the dot4s.

`use_int8_decode_activations` (`mlcgen build --int8-activations`) rewrites the decode matmuls that
read a fused add + RMSNorm's output: the norm writes the codes, the matmuls read them. A quantize
kernel of its own before each matmul cost as much as the int8 matmul saved, and so did a norm
with one thread per group (docs/benchmarks.md, session 17). Measured on the H200: Vulkan decode
+5-7%, CUDA even; on a random 7B-shape model the decode logits move 4x as far from transformers'
(relative error 5.2e-2 against 1.2e-2), so it is a build option, off by default.
"""

from __future__ import annotations

from functools import cache

import numpy as np

GROUP = 32  # activations per int8 scale: the q4 weight's scale group
CODES_BLOCK = "dequantize_codes"  # the weight's codes as floats (inlined by every schedule)
ACTIVATION_BLOCK = "dequantize_activation"  # the activation's int8 codes as floats (likewise)


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy's (xq, xd) of a [K] activation, as the kernel computes them (the test oracle)."""
    groups = x.astype(np.float32).reshape(-1, GROUP)
    amax = np.abs(groups).max(axis=1)
    inverse = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax > 0)
    codes = np.rint(groups * inverse[:, None]).astype(np.int8)
    octets = codes.reshape(-1, GROUP // 8, 8)  # group, q4 word, element of the word
    words = np.concatenate([octets[:, :, 0::2], octets[:, :, 1::2]], axis=1).copy().view(np.uint32).reshape(-1)
    xd = np.stack([amax / np.float32(127), 7 * codes.astype(np.float32).sum(axis=1)], axis=1).astype(np.float32)
    return words, xd


def dequantize(xq: np.ndarray, xd: np.ndarray) -> np.ndarray:
    """The activation the int8 codes stand for (float32 [K])."""
    words = xq.reshape(-1, 2, GROUP // 8).view(np.int8).reshape(-1, 2, GROUP // 8, 4)  # group, parity, word, byte
    codes = np.stack([words[:, 0], words[:, 1]], axis=-1).reshape(-1, GROUP)  # element 8j + 2b + parity
    return (codes.astype(np.float32) * xd[:, :1]).reshape(-1)


def add_rms_norm_quantize_kernel(hidden: int, epsilon: float, max_threads: int = 1024):
    """(a, b, weight) -> (a + b, xq, xd of rms_norm(a + b) * weight) for one token: the fused
    residual add + RMSNorm (compiler/passes.py) writing the normed activation as int8 codes. One
    workgroup: each thread takes `per_thread` consecutive elements (8: one q4 word's; more where
    the workgroup would exceed max_threads), so a group's 32 values sit in 32 / per_thread
    neighbouring threads. The row's sum of squares meets in a tree through shared memory, a
    group's largest magnitude and code sum through shared memory too (WGSL without subgroups has
    nothing else). The normed value is rounded to fp16 first, as the fp16 kernel stores it.
    Scheduled here: no rule takes it."""
    from tvm.script import tirx as T

    per_thread = 8
    while hidden // per_thread > max_threads and per_thread < GROUP:
        per_thread *= 2
    threads, sharing = hidden // per_thread, GROUP // per_thread  # threads, and threads per group
    if hidden % GROUP or threads > max_threads:
        raise ValueError(f"internal: no int8 add + RMSNorm for hidden size {hidden} in {max_threads} threads")
    tree = 1 << (threads - 1).bit_length()  # the reduction's width: a power of two, zeros past `threads`
    words = per_thread // 8  # q4 words a thread's values cover

    @T.prim_func(s_tir=True, private=True)
    def add_rms_norm_quantize(a: T.Buffer((1, 1, hidden), "float16"), b: T.Buffer((1, 1, hidden), "float16"),
                              w: T.Buffer((hidden,), "float16"), total: T.Buffer((1, 1, hidden), "float16"),
                              xq: T.Buffer((hidden // 4,), "uint32"), xd: T.Buffer((hidden // GROUP, 2), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "op_pattern": 8})
        for tx in T.thread_binding(tree, thread="threadIdx.x"):
            with T.sblock("add_rms_norm_quantize"):
                T.reads(a[0, 0, 0:hidden], b[0, 0, 0:hidden], w[0:hidden])
                T.writes(total[0, 0, 0:hidden], xq[0:hidden // 4], xd[0:hidden // GROUP, 0:2])
                v = T.sblock_alloc_buffer((per_thread,), "float32", scope="local")
                acc = T.sblock_alloc_buffer((2,), "float32", scope="local")
                code_sum = T.sblock_alloc_buffer((1,), "int32", scope="local")
                word = T.sblock_alloc_buffer((1,), "uint32", scope="local")
                partial = T.sblock_alloc_buffer((tree,), "float32", scope="shared")
                partial_sums = T.sblock_alloc_buffer((tree,), "int32", scope="shared")
                acc[0] = T.float32(0)
                if tx < threads:
                    for i in T.unroll(per_thread):
                        total[0, 0, tx * per_thread + i] = a[0, 0, tx * per_thread + i] + b[0, 0, tx * per_thread + i]
                        v[i] = T.Cast("float32", total[0, 0, tx * per_thread + i])
                        acc[0] = acc[0] + v[i] * v[i]
                partial[tx] = acc[0]
                T.tvm_storage_sync("shared")
                for level in T.unroll((tree - 1).bit_length()):
                    if tx < tree >> (level + 1):
                        partial[tx] = partial[tx] + partial[tx + (tree >> (level + 1))]
                    T.tvm_storage_sync("shared")
                acc[1] = T.rsqrt(partial[0] / T.float32(hidden) + T.float32(epsilon))
                acc[0] = T.float32(0)  # now the largest magnitude of the thread's values
                if tx < threads:
                    for i in T.unroll(per_thread):
                        v[i] = T.Cast("float32", T.Cast("float16", v[i] * acc[1] * T.Cast("float32", w[tx * per_thread + i])))
                        acc[0] = T.max(acc[0], T.fabs(v[i]))
                T.tvm_storage_sync("shared")  # every thread has read the sum of squares
                partial[tx] = acc[0]
                T.tvm_storage_sync("shared")
                acc[0] = T.float32(0)  # the group's
                for i in T.unroll(sharing):
                    acc[0] = T.max(acc[0], partial[tx // sharing * sharing + i])
                code_sum[0] = 0
                if tx < threads:
                    inverse = T.meta_var(T.if_then_else(acc[0] > T.float32(0), T.float32(127) / acc[0], T.float32(0)))
                    for j in T.unroll(2 * words):  # the even codes of each of the thread's q4 words, then the odd ones
                        word[0] = T.uint32(0)
                        for byte in T.unroll(4):
                            code = T.meta_var(T.Cast("int32", T.round(v[j % words * 8 + byte * 2 + j // words] * inverse)))
                            code_sum[0] = code_sum[0] + code
                            word[0] = word[0] | (T.Cast("uint32", code) & T.uint32(255)) << T.Cast("uint32", byte * 8)
                        # word q of its group (q = the thread's first word's place + j % words), even or odd half
                        xq[tx // sharing * 8 + j // words * 4 + tx % sharing * words + j % words] = word[0]
                partial_sums[tx] = code_sum[0]
                T.tvm_storage_sync("shared")
                if tx < threads and tx % sharing == 0:
                    code_sum[0] = 0
                    for i in T.unroll(sharing):
                        code_sum[0] = code_sum[0] + partial_sums[tx + i]
                    xd[tx // sharing, 0] = acc[0] / T.float32(127)
                    xd[tx // sharing, 1] = T.Cast("float32", code_sum[0] * 7)

    return add_rms_norm_quantize


def matmul_te(scheme, xq, xd, q_weight, q_scale, out_dtype: str):
    """y[1, 1, N] = int8 activation (xq, xd) @ dequantize(q_weight, q_scale).T, accumulated in
    float32: per element (c * q - 7 sum(q) / 32) * d * s, so a group's 32 terms sum to its
    d * s * (c - 7) . q. The weight's codes and the activation's are blocks of their own, as the q4
    matmul's dequantize, which every schedule inlines."""
    from tvm import te, tirx

    from .layers import index

    n_total = q_weight.shape[0]
    k_total = index(int(xq.shape[0]) * 4)
    codes = te.compute((n_total, k_total), lambda n, k: tirx.Cast(
        "float32", q_weight[n, k // scheme.PACK] >> (k % scheme.PACK * 4).astype("uint32") & tirx.const(15, "uint32")), name=CODES_BLOCK)

    def activation_code(b, t, k):  # the signed byte of element k (layout in the module docstring)
        word = xq[k // GROUP * 8 + k % 2 * 4 + k % GROUP // 8]
        return tirx.Cast("float32", tirx.Cast("int32", word << (24 - k % 8 // 2 * 8).astype("uint32")) >> 24)

    activation = te.compute((index(1), index(1), k_total), activation_code, name=ACTIVATION_BLOCK)
    k = te.reduce_axis((0, k_total), name="k")
    g = k // GROUP
    acc = te.compute((index(1), index(1), n_total), lambda b, t, n: te.sum(
        (codes[n, k] * activation[b, t, k] - xd[g, 1] * tirx.const(1 / GROUP, "float32")) * (xd[g, 0] * q_scale[n, g].astype("float32")),
        axis=k), name="matmul")
    if out_dtype == "float32":
        return acc
    return te.compute(acc.shape, lambda *i: acc[i].astype(out_dtype), name="cast")


def use_int8_decode_activations(lanes: int, max_threads: int):
    """Module pass, after FuseAddRMSNorm: where a one-token fused add + RMSNorm's normed output
    feeds only q4 matmuls whose rows have a multiple of `lanes` scale groups (the GEMV's lanes per
    row: tensorize takes no padded step), the norm writes int8 codes (add_rms_norm_quantize_kernel)
    and the matmuls read them (matmul_te, SwiGLU epilogue kept). Matmuls on other activations (the
    o and down projections, lm_head) keep fp16: a quantize kernel of their own costs as much time
    as their int8 form saves (a dependent dispatch, docs/benchmarks.md)."""
    import tvm

    from .passes import mutate_relax_functions

    @tvm.transform.module_pass(opt_level=0, name="UseInt8DecodeActivations")
    def rewrite(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return mutate_relax_functions(mod, _mutator_class()(mod, lanes, max_threads))

    return rewrite


def matmul_func(scheme, n: int, k: int, out_dtype: str, epilogue: str | None = None):
    """The PrimFunc (xq, xd, q_weight, q_scale) -> y[1, 1, N] of matmul_te for an [n, k] weight,
    with its epilogue (SWIGLU: y has n / 2 columns); what the pass adds, and what tests compile."""
    from tvm import te

    from .layers import SWIGLU, placeholder, swiglu_te

    xq = placeholder((k // 4,), "uint32", "xq")
    xd = placeholder((k // GROUP, 2), "float32", "xd")
    w = placeholder((n, k // scheme.PACK), "uint32", "q_weight")
    s = placeholder((n, k // scheme.group_size), scheme.model_dtype, "q_scale")
    if epilogue == SWIGLU:
        y = swiglu_te(matmul_te(scheme, xq, xd, w, s, "float32"), out_dtype)
    elif epilogue is None:
        y = matmul_te(scheme, xq, xd, w, s, out_dtype)
    else:
        raise NotImplementedError(f"int8 activations for a q4 matmul with epilogue {epilogue!r}")
    return te.create_prim_func([xq, xd, w, s, y])


@cache
def _mutator_class():
    """The Relax mutator, defined on first use (TVM's compiler is imported lazily)."""
    from tvm import relax

    from ..targets.schedules.add_rms_norm import EPSILON_ATTR
    from .layers import EPILOGUE_ATTR, Q4_MATMUL_ATTR
    from .passes import called_kernel_attrs, is_one_token_add_rms_norm, is_one_token_fp16
    from .quantization import QUANTIZATIONS

    @relax.expr_functor.mutator
    class Int8Activations(relax.PyExprMutator):
        def __init__(self, mod, lanes: int, max_threads: int):
            super().__init__(mod)
            self.mod, self.lanes, self.max_threads = mod, lanes, max_threads
            self.norms = {}  # var of a norm to rewrite -> its int8 kernel's call, once emitted
            self.codes = {}  # var of such a norm's normed output -> (xq, xd)

        def visit_function_(self, func):
            self.norms, self.codes = self._int8_norms(func), {}
            return super().visit_function_(func)

        def visit_var_binding_(self, binding):
            var, value = binding.var, binding.value
            if var in self.norms:  # the norm, now writing (sum, xq, xd)
                a, b, w = value.args[1].fields
                hidden, epsilon = int(a.ty.shape.values[-1]), float(self.mod[value.args[0]].attrs[EPSILON_ATTR])
                kernel = self.builder_.add_func(add_rms_norm_quantize_kernel(hidden, epsilon, self.max_threads), "add_rms_norm_quantize")
                out = [a.ty, relax.TensorType((hidden // 4,), "uint32"), relax.TensorType((hidden // GROUP, 2), "float32")]
                self.norms[var] = self.builder_.emit(relax.call_tir(kernel, [self.visit_expr(x) for x in (a, b, w)], out))
                return
            if isinstance(value, relax.TupleGetItem) and value.tuple_value in self.norms:
                fused = self.norms[value.tuple_value]
                if value.index == 1:  # the normed activation: its codes
                    self.codes[var] = tuple(self.builder_.emit(relax.TupleGetItem(fused, i)) for i in (1, 2))
                    return
                emit = self.builder_.emit if isinstance(var, relax.DataflowVar) else self.builder_.emit_output
                self.set_var_remap(var, emit(relax.TupleGetItem(fused, 0)))
                return
            super().visit_var_binding_(binding)

        def visit_call_(self, call):
            if self._int8_matmul(call) is None or call.args[1].fields[0] not in self.codes:
                return super().visit_call_(call)
            attrs = self.mod[call.args[0]].attrs
            x, w, s = call.args[1].fields
            scheme = QUANTIZATIONS[str(attrs[Q4_MATMUL_ATTR])]
            epilogue = str(attrs[EPILOGUE_ATTR]) if EPILOGUE_ATTR in attrs else None
            func = matmul_func(scheme, int(w.ty.shape.values[0]), int(x.ty.shape.values[-1]), call.ty.dtype, epilogue)
            matmul = self.builder_.add_func(func.without_attr("global_symbol"), "q4_int8_matmul")
            return relax.call_tir(matmul, [*self.codes[x], self.visit_expr(w), self.visit_expr(s)], call.ty)

        def _int8_matmul(self, call):
            """The activation of a q4 matmul on one fp16 token whose rows the lanes tile, else None."""
            if Q4_MATMUL_ATTR not in (called_kernel_attrs(self.mod, call) or {}):
                return None
            x = call.args[1].fields[0]
            fits = is_one_token_fp16(x.ty) and int(x.ty.shape.values[-1]) % (GROUP * self.lanes) == 0
            return x if fits else None

        def _int8_norms(self, func) -> dict:
            """{var: None} of the one-token fused add + RMSNorm calls in `func` whose sum and normed
            output are taken apart by index and whose normed output only int8-capable q4 matmuls
            read, as their activation."""
            bindings = [b for block in func.body.blocks for b in block.bindings]
            norms = {b.var for b in bindings if is_one_token_add_rms_norm(self.mod, b.value)}
            normed = {b.var: b.value.tuple_value for b in bindings
                      if isinstance(b.value, relax.TupleGetItem) and b.value.tuple_value in norms and b.value.index == 1}
            for b in bindings:
                used = set(relax.analysis.free_vars(b.value))
                if used & norms and not isinstance(b.value, relax.TupleGetItem):
                    norms -= used  # the norm's pair used whole
                if used & set(normed) and self._int8_matmul(b.value) not in used:
                    norms -= {normed[v] for v in used & set(normed)}  # the normed output read otherwise
            norms -= {normed[v] for v in set(relax.analysis.free_vars(func.body.body)) & set(normed)}  # returned
            return {v: None for v in norms & set(normed.values())}

    return Int8Activations
