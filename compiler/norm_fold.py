"""Decode RMSNorms folded into the GEMVs around them, the sum of squares computed once.

A one-token fused add + RMSNorm (compiler/passes.py) between two q4 GEMVs is a kernel launch of
its own: 64 of a Llama-2-7B decode step's ~330, ~1.9 us each on CUDA and ~5 us on Vulkan
(docs/benchmarks.md). Folding it into the next GEMV with each thread block summing the squares of
the whole activation cost more than the launch (sessions 14 and 21: every block pays for a norm).
Here the sum of squares is computed once, by the GEMV before the norm:

    producer (o or down projection), one token, R output rows per slot:
        h[n]      = residual[n] + fp16(W a)[n]           the residual stream, as the norm wrote it
        hw[n]     = fp16(h[n] * w[n])                    the norm's input times its weight
        ss[j]     = sum over n in slot j of h[n]^2       partial sums of squares, float32
    consumer (q/k/v, gate/up), reading hw in place of the normed activation, in one of two forms:
        y[m]      = (V hw)[m] * rsqrt(sum_j ss[j] / K + eps)        the factor after the dot products
        y[m]      = (V (hw * fp16(rsqrt(sum_j ss[j] / K + eps))))[m]  the activation normalized first

rms_norm(h) * w = hw * rsqrt(mean(h^2) + eps), up to where fp16 rounds. A slot is the rows one
thread block of the producer computes (the GEMV rule's rows_per_block x rows_per_thread), so each
block writes its slot without atomics and the result is deterministic. The factor after the dot
products leaves the weight stream waiting on nothing: each consumer warp sums the slots (512 floats
at K = 4096) beside it (WGSL, each lane loading its own activations). A GEMV that stages its
activation in shared memory normalizes it there: the block's threads sum the slots together first,
and its products see the normalized activation, as CUDA's fp16 products need (the factor after them
gave NaN logits at 7B, docs/benchmarks.md).
"""

from __future__ import annotations

from functools import cache

SQUARE_SUM = "square_sum"  # producer block: the slots' sums of squares
NORM_INPUT = "norm_input"  # producer block: h * w, the consumer's activation
SQUARE_TOTAL = "square_total"  # consumer block: the slots summed
NORMALIZED = "rms_normalized"  # consumer block, normalized form: the activation hw times the factor
# A consumer's slot count is padded to a multiple of this: the most threads a GEMV block sums the
# slots with (4 rows of 64 lanes), so that they split the slots evenly
SLOT_PADDING = 256


def producer_te(scheme, x, q_weight, q_scale, residual, norm_weight, slot_rows: int):
    """(h, hw, ss) of a one-token q4 matmul whose output a fused add + RMSNorm read (module doc)."""
    from tvm import te

    from .layers import index, q4_matmul_te

    y = q4_matmul_te(scheme, x, q_weight, q_scale, "float16")
    n_total = int(y.shape[-1])
    total = te.compute(y.shape, lambda *i: residual[i] + y[i], name="residual_add")
    h = te.compute(y.shape, lambda *i: total[i], name="residual_sum")
    hw = te.compute(y.shape, lambda b, t, n: (total[b, t, n].astype("float32") * norm_weight[n].astype("float32")).astype("float16"),
                    name=NORM_INPUT)
    r = te.reduce_axis((0, index(slot_rows)), name="r")
    square = lambda j: total[0, 0, j * slot_rows + r].astype("float32")  # noqa: E731
    ss = te.compute((index(n_total // slot_rows),), lambda j: te.sum(square(j) * square(j), axis=r), name=SQUARE_SUM)
    return h, hw, ss


def consumer_te(scheme, hw, ss, q_weight, q_scale, epsilon: float, out_dtype: str, epilogue: str | None = None,
                normalize_first: bool = False):
    """The q4 matmul (with its epilogue: SWIGLU or none) of the normed activation, the norm's factor
    taken from the slots: after the dot products, or with `normalize_first` on the activation
    (module doc)."""
    from tvm import te, tirx

    from .layers import SWIGLU, index, q4_matmul_te, swiglu_te

    if epilogue not in (None, SWIGLU):
        raise NotImplementedError(f"a folded RMSNorm before a q4 matmul with epilogue {epilogue!r}")
    slots = int(ss.shape[0])
    # Padded with zeros to SLOT_PADDING: TVM drops the predicate of a ragged split here.
    j = te.reduce_axis((0, index(-(-slots // SLOT_PADDING) * SLOT_PADDING)), name="j")
    slot = lambda j: ss[j] if slots % SLOT_PADDING == 0 else tirx.if_then_else(j < index(slots), ss[tirx.min(j, index(slots - 1))], 0.0)  # noqa: E731
    total = te.compute((index(1),), lambda _: te.sum(slot(j), axis=j), name=SQUARE_TOTAL)
    factor = tirx.rsqrt(total[index(0)] / tirx.const(float(int(hw.shape[-1])), "float32") + tirx.const(epsilon, "float32"))
    if normalize_first:
        # in fp16: TVM 0.27's CUDA code for 8 float32 lanes (the staging's vectors) does not compile
        x = te.compute(hw.shape, lambda *i: hw[i] * factor.astype("float16"), name=NORMALIZED)
        acc = q4_matmul_te(scheme, x, q_weight, q_scale, "float32")
    else:
        unscaled = q4_matmul_te(scheme, hw, q_weight, q_scale, "float32")
        acc = te.compute(unscaled.shape, lambda *i: unscaled[i] * factor, name="rms_scale")
    if epilogue == SWIGLU:
        return swiglu_te(acc, out_dtype)
    return acc if out_dtype == "float32" else te.compute(acc.shape, lambda *i: acc[i].astype(out_dtype), name="cast")


def producer_func(scheme, n: int, k: int, slot_rows: int):
    """The PrimFunc (x, q_weight, q_scale, residual, norm_weight) -> (h, hw, ss) for an [n, k] weight."""
    from tvm import te

    from .layers import placeholder

    x = placeholder((1, 1, k), "float16", "x")
    w = placeholder((n, k // scheme.PACK), "uint32", "q_weight")
    s = placeholder((n, k // scheme.group_size), scheme.model_dtype, "q_scale")
    residual = placeholder((1, 1, n), "float16", "residual")
    g = placeholder((n,), "float16", "norm_weight")
    return te.create_prim_func([x, w, s, residual, g, *producer_te(scheme, x, w, s, residual, g, slot_rows)])


def consumer_func(scheme, n: int, k: int, slots: int, epsilon: float, out_dtype: str, epilogue: str | None = None,
                  normalize_first: bool = False):
    """The PrimFunc (hw, ss, q_weight, q_scale) -> y for an [n, k] weight (consumer_te)."""
    from tvm import te

    from .layers import placeholder

    hw = placeholder((1, 1, k), "float16", "hw")
    ss = placeholder((slots,), "float32", "ss")
    w = placeholder((n, k // scheme.PACK), "uint32", "q_weight")
    s = placeholder((n, k // scheme.group_size), scheme.model_dtype, "q_scale")
    return te.create_prim_func([hw, ss, w, s, consumer_te(scheme, hw, ss, w, s, epsilon, out_dtype, epilogue, normalize_first)])


def fold_rms_norms(slot_rows: int, normalize_first: bool, into_swiglu: bool):
    """Module pass, after FuseAddRMSNorm (and --int8-activations' rewrite, whose norms it leaves):
    each one-token fused add + RMSNorm that adds a q4 GEMV's output, with `slot_rows` dividing its
    rows, to the residual, and whose normed output only q4 GEMVs read (without the SwiGLU epilogue
    unless `into_swiglu`), becomes part of those GEMVs, the consumers in the form `normalize_first`
    picks (module doc)."""
    import tvm

    from .layers import SWIGLU
    from .passes import mutate_relax_functions

    @tvm.transform.module_pass(opt_level=0, name="FoldRMSNormsIntoGEMVs")
    def rewrite(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        epilogues = (None, SWIGLU) if into_swiglu else (None,)
        return mutate_relax_functions(mod, _mutator_class()(mod, slot_rows, normalize_first, epilogues))

    return rewrite


@cache
def _mutator_class():
    """The Relax mutator, defined on first use (TVM's compiler is imported lazily)."""
    from tvm import relax

    from ..targets.schedules.add_rms_norm import EPSILON_ATTR
    from .layers import EPILOGUE_ATTR, Q4_MATMUL_ATTR, SWIGLU
    from .passes import called_kernel_attrs, is_one_token_add_rms_norm, is_one_token_fp16
    from .quantization import QUANTIZATIONS

    @relax.expr_functor.mutator
    class FoldRMSNorms(relax.PyExprMutator):
        def __init__(self, mod, slot_rows: int, normalize_first: bool, consumer_epilogues: tuple):
            super().__init__(mod)
            self.mod, self.slot_rows, self.normalize_first = mod, slot_rows, normalize_first
            self.consumer_epilogues = consumer_epilogues
            self.folds = {}  # norm var -> (producer matmul var, residual); then (folded producer's call, epsilon)
            self.producers = {}  # producer matmul var -> its binding's value, emitted with the norm
            self.normed = {}  # var of a folded norm's normed output -> (hw, ss, epsilon)

        def visit_function_(self, func):
            self.normed, self.folds = {}, self._foldable(func)
            self.producers = {p: None for p, _ in self.folds.values()}
            return super().visit_function_(func)

        def visit_var_binding_(self, binding):
            var, value = binding.var, binding.value
            if var in self.producers:  # emitted with its norm
                self.producers[var] = value
                return
            if var in self.folds:
                producer, residual = self.folds[var]
                epsilon = float(self.mod[value.args[0]].attrs[EPSILON_ATTR])
                self.folds[var] = self._emit_producer(self.producers[producer], residual, value), epsilon
                return
            if isinstance(value, relax.TupleGetItem) and value.tuple_value in self.folds:
                folded, epsilon = self.folds[value.tuple_value]
                if value.index == 1:  # the normed activation: hw and the slots
                    self.normed[var] = (*(self.builder_.emit(relax.TupleGetItem(folded, i)) for i in (1, 2)), epsilon)
                    return
                emit = self.builder_.emit if isinstance(var, relax.DataflowVar) else self.builder_.emit_output
                self.set_var_remap(var, emit(relax.TupleGetItem(folded, 0)))
                return
            super().visit_var_binding_(binding)

        def visit_call_(self, call):
            if not self._is_gemv(call) or call.args[1].fields[0] not in self.normed:
                return super().visit_call_(call)
            attrs = self.mod[call.args[0]].attrs
            x, w, s = call.args[1].fields
            hw, ss, epsilon = self.normed[x]
            func = consumer_func(QUANTIZATIONS[str(attrs[Q4_MATMUL_ATTR])], int(w.ty.shape.values[0]), int(x.ty.shape.values[-1]),
                                 int(ss.ty.shape.values[0]), epsilon, call.ty.dtype,
                                 str(attrs[EPILOGUE_ATTR]) if EPILOGUE_ATTR in attrs else None, self.normalize_first)
            gemv = self.builder_.add_func(func.without_attr("global_symbol"), "q4_matmul_rms_scaled")
            return relax.call_tir(gemv, [hw, ss, self.visit_expr(w), self.visit_expr(s)], call.ty)

        def _emit_producer(self, matmul, residual, norm):
            x, w, s = matmul.args[1].fields
            weight = norm.args[1].fields[2]
            n, k = int(w.ty.shape.values[0]), int(x.ty.shape.values[-1])
            scheme = QUANTIZATIONS[str(self.mod[matmul.args[0]].attrs[Q4_MATMUL_ATTR])]
            producer = self.builder_.add_func(producer_func(scheme, n, k, self.slot_rows).without_attr("global_symbol"),
                                              "q4_matmul_add_rms_sums")
            out = [residual.ty, residual.ty, relax.TensorType((n // self.slot_rows,), "float32")]
            return self.builder_.emit(relax.call_tir(producer, [self.visit_expr(v) for v in (x, w, s, residual, weight)], out))

        def _is_gemv(self, call, epilogues=(None, SWIGLU)) -> bool:
            """A q4 matmul on one fp16 token, with one of `epilogues`."""
            attrs = called_kernel_attrs(self.mod, call)
            if attrs is None:
                return False
            epilogue = str(attrs[EPILOGUE_ATTR]) if EPILOGUE_ATTR in attrs else None
            return Q4_MATMUL_ATTR in attrs and epilogue in epilogues and is_one_token_fp16(call.args[1].fields[0].ty)

        def _foldable(self, func) -> dict:
            """{norm var: (producer matmul var, residual)} of the norms to fold: the norm's sum and
            normed output taken apart by index, the normed output read only as q4 GEMVs'
            activation, and one of its addends a plain q4 GEMV's fp16 output read by nothing else."""
            bindings = [b for block in func.body.blocks for b in block.bindings]
            values = {b.var: b.value for b in bindings}
            uses = {}
            for b in bindings:
                for v in relax.analysis.free_vars(b.value):
                    uses.setdefault(v, []).append(b.value)
            for v in relax.analysis.free_vars(func.body.body):
                uses.setdefault(v, []).append(None)  # returned
            folds = {}
            for var, value in values.items():
                if not is_one_token_add_rms_norm(self.mod, value):
                    continue
                getters = uses.get(var, [])
                if not all(isinstance(u, relax.TupleGetItem) for u in getters):
                    continue
                normed = [v for v, u in values.items() if isinstance(u, relax.TupleGetItem) and u.tuple_value.same_as(var) and u.index == 1]
                if not all(self._is_gemv(u, self.consumer_epilogues) and u.args[1].fields[0].same_as(n) and not any(f.same_as(n) for f in u.args[1].fields[1:])
                           for n in normed for u in uses.get(n, [None])):
                    continue
                a, b, _ = value.args[1].fields
                for producer, residual in ((b, a), (a, b)):
                    matmul = values.get(producer)
                    if (matmul is not None and self._is_gemv(matmul, (None,)) and len(uses.get(producer, [])) == 1
                            and matmul.ty.dtype == "float16" and int(matmul.ty.shape.values[-1]) % self.slot_rows == 0):
                        folds[var] = (producer, residual)
                        break
            return folds

    return FoldRMSNorms
