"""Relax passes of our own (the rest of the pipeline is TVM's)."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, te, topi
from tvm.relax.dpl import PatternContext, is_op, rewrite_bindings, wildcard

from ..targets.schedules.add_rms_norm import EPSILON_ATTR, KERNEL_ATTR
from ..targets.schedules.add_rms_norm import KERNEL as ADD_RMS_NORM


def _add_rms_norm_kernel(a: relax.Var, b: relax.Var, weight: relax.Var, epsilon: float) -> tvm.tirx.PrimFunc:
    """One kernel writing both the residual sum and its RMS norm (computed in float32 by topi)."""
    ta, tb, tw = (te.placeholder(list(v.ty.shape.values), v.ty.dtype, n) for v, n in ((a, "a"), (b, "b"), (weight, "w")))
    total = te.compute(ta.shape, lambda *i: ta(*i) + tb(*i), name="residual_sum")
    normed = topi.nn.rms_norm(total, tw, axis=[len(ta.shape) - 1], epsilon=epsilon)
    func = te.create_prim_func([ta, tb, tw, total, normed]).without_attr("global_symbol")
    # Opaque to FuseOps (it is fused already), and named for the GPU schedule rule that takes it.
    return func.with_attr({"op_pattern": 8, KERNEL_ATTR: ADD_RMS_NORM, EPSILON_ATTR: tvm.tirx.FloatImm("float32", epsilon)})


@tvm.transform.module_pass(opt_level=0, name="FuseAddRMSNorm")
def fuse_add_rms_norm(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """`s = a + b; n = rms_norm(s, w)` -> one kernel producing (s, n).

    TVM's FuseOps cannot do this: the sum also feeds the next residual add, so the add has no
    single post-dominator to fuse into. Saves a full read and write of the hidden state per norm.
    """
    with PatternContext() as ctx:
        a, b, weight = wildcard(), wildcard(), wildcard()
        add = is_op("relax.add")(a, b)
        norm = is_op("relax.nn.rms_norm")(add, weight)

    bb = relax.BlockBuilder(mod)

    def rewrite(matched, bindings):
        va, vb, vw = matched[a], matched[b], matched[weight]
        norm_call = bindings[matched[norm]]
        ndim = len(va.ty.shape.values)
        if not tvm_ffi.structural_equal(va.ty, vb.ty) or [int(x) % ndim for x in norm_call.attrs.axes] != [ndim - 1]:
            return {}  # broadcasting adds and norms over other axes stay as they are
        kernel = bb.add_func(_add_rms_norm_kernel(va, vb, vw, float(norm_call.attrs.epsilon)), "fused_add_rms_norm")
        fused = relax.call_tir(kernel, [va, vb, vw], out_ty=[va.ty, va.ty])
        return {matched[add]: relax.TupleGetItem(fused, 0), matched[norm]: relax.TupleGetItem(fused, 1)}

    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            bb.update_func(gvar, rewrite_bindings(ctx, rewrite, func))
    return bb.finalize()


def is_one_token_fp16(ty) -> bool:
    """An fp16 tensor type of static shape [1, .., 1, n]: one token's activation (decode)."""
    dims = ty.shape.values
    return ty.dtype == "float16" and all(isinstance(d, tvm.tirx.IntImm) for d in dims) and all(int(d) == 1 for d in dims[:-1])


def called_kernel_attrs(mod: tvm.IRModule, expr: relax.Expr):
    """The attributes of the PrimFunc in `mod` that `expr` calls through call_tir ({} where it has
    none), or None where `expr` is no such call."""
    if not isinstance(expr, relax.Call) or expr.op != tvm.ir.Op.get("relax.call_tir") or not isinstance(expr.args[0], tvm.ir.GlobalVar):
        return None
    return mod[expr.args[0]].attrs or {}


def is_one_token_add_rms_norm(mod: tvm.IRModule, value: relax.Expr) -> bool:
    """A call of fuse_add_rms_norm's kernel on one token."""
    attrs = called_kernel_attrs(mod, value)
    return attrs is not None and attrs.get(KERNEL_ATTR) == ADD_RMS_NORM and is_one_token_fp16(value.args[1].fields[0].ty)


def mutate_relax_functions(mod: tvm.IRModule, mutator: relax.PyExprMutator) -> tvm.IRModule:
    """`mod` with each Relax function rewritten by `mutator` (built on `mod`)."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.finalize()


@tvm.transform.module_pass(opt_level=0, name="InlineDequantize")
def inline_dequantize(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Inline the q4 layers' dequantize block into the matmul that reads it (compiler/layers.py), in
    every PrimFunc no schedule has taken yet: unscheduled, it would materialize the float weight."""
    from tvm import s_tir

    from ..targets.schedules import dequantize_blocks

    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs is not None and func.attrs.get("tirx.is_scheduled")):
            continue
        sch = s_tir.Schedule(func)
        blocks = dequantize_blocks(sch)
        for block in blocks:
            sch.compute_inline(block)
        if blocks:
            updates[gvar] = sch.mod["main"]
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod


@tvm.transform.module_pass(opt_level=0, name="CheckThreadBindings")
def check_thread_bindings(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Last of a GPU target's schedule passes: every block of every PrimFunc under a GPU thread
    binding. A block outside one (no rule took it, or a rule left it) would be compiled as host
    code reading device memory: a segfault at its first call on the GPU, found here instead."""
    unbound = {gvar.name_hint: names for gvar, func in mod.functions_items()
               if isinstance(func, tvm.tirx.PrimFunc) and (names := _unbound_blocks(func.body))}
    if unbound:
        listed = "; ".join(f"{name}: {', '.join(blocks[:4])}" for name, blocks in sorted(unbound.items()))
        raise RuntimeError(f"internal: GPU kernels with blocks outside any thread binding (no schedule rule "
                           f"took them; they would run on the host): {listed}")
    return mod


def _unbound_blocks(stmt, bound: bool = False) -> list[str]:
    """Names of the blocks under `stmt` (a TIR statement) with no GPU thread binding around them."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For) and stmt.kind == tirx.ForKind.THREAD_BINDING:
        bound = True
    elif isinstance(stmt, tirx.AttrStmt) and stmt.attr_key == "thread_extent":
        bound = True
    elif isinstance(stmt, s_tir.SBlockRealize) and stmt.block.name_hint != "root" and not bound:
        return [stmt.block.name_hint]
    found = []
    for field in ("body", "block", "then_case", "else_case", "seq"):
        child = getattr(stmt, field, None)
        for c in child if isinstance(child, tvm_ffi.Array) else [child]:
            if isinstance(c, (tirx.Stmt, s_tir.SBlock)):
                found += _unbound_blocks(c, bound)
    return found


def offload_prefill_matmuls(entry: str, packed_func: str, slice_bytes: int):
    """A copy of the `prefill` entry, named `entry`, whose fp16 q4 matmuls over the prompt's tokens
    are each one call of `packed_func`(x, q_weight, q_scale, dequantize, slice_rows, out), a vendor
    GEMM (runtime/cublas/plugin.cc). It runs `dequantize` (a kernel compiled here, passed as a
    function) on row slices of about `slice_bytes` of fp16 weight into a scratch buffer of its
    own and multiplies each slice into its columns of `out`: no slice is a tensor of the graph, so
    memory planning holds nothing for them. The runtime prefills with the entry where the library
    loads (manifest target `library_prefill`)."""

    @tvm.transform.module_pass(opt_level=0, name="OffloadPrefillMatmuls")
    def offload(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _PrefillMatmulOffload(mod, packed_func, slice_bytes)
        prefill = rewriter.visit_expr(relax.utils.copy_with_new_vars(mod["prefill"]))
        if not rewriter.offloaded:
            return mod  # float weights: no q4 matmul, no entry
        rewriter.builder_.add_func(prefill.with_attr("global_symbol", entry), entry)
        return rewriter.builder_.finalize()

    return offload


@relax.expr_functor.mutator
class _PrefillMatmulOffload(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, packed_func: str, slice_bytes: int):
        super().__init__(mod)
        self.mod, self.packed_func, self.slice_bytes = mod, packed_func, slice_bytes
        self.offloaded = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        scheme = self._offloadable(call)
        if scheme is None:
            return call
        x, q_weight, q_scale = call.args[1].fields
        n, k = int(q_weight.ty.shape[0]), int(x.ty.shape[-1])
        kernel = self.builder_.add_func(_dequantize_rows(scheme, q_weight.ty, q_scale.ty), "dequantize_rows")
        slice_rows = relax.prim_value(tvm.tirx.IntImm("int64", _slice_rows(n, k * 2, self.slice_bytes)))
        self.offloaded += 1
        return relax.call_dps_packed(self.packed_func, [x, q_weight, q_scale, kernel, slice_rows], call.ty)

    def _offloadable(self, call: relax.Call):
        """The quantization scheme of a call_tir to a tagged fp16 q4 matmul over a token count not
        known at compile time (prefill), else None."""
        from .layers import EPILOGUE_ATTR, Q4_MATMUL_ATTR
        from .quantization import QUANTIZATIONS

        attrs = called_kernel_attrs(self.mod, call)
        if attrs is None or Q4_MATMUL_ATTR not in attrs or EPILOGUE_ATTR in attrs or call.ty.dtype != "float16" or call.args[1].fields[0].ty.dtype != "float16":
            return None
        if all(isinstance(d, tvm.tirx.IntImm) for d in call.ty.shape.values):
            return None  # decode and the last token's lm_head: the GEMV reads the q4 weight once
        return QUANTIZATIONS[str(attrs[Q4_MATMUL_ATTR])]


def _slice_rows(n: int, row_bytes: int, slice_bytes: int) -> int:
    """Rows per slice: the fewest slices of at most slice_bytes, in multiples of 128 rows (GEMM
    tiles); the last slice may be shorter."""
    count = -(-n * row_bytes // slice_bytes)
    return min(n, -(-n // count // 128) * 128)


def _dequantize_rows(scheme, weight_ty, scale_ty) -> tvm.tirx.PrimFunc:
    """weight[first:first + rows, :] in fp16; `first` a scalar argument, `rows` the output's."""
    from ..targets.schedules.dequantize_rows import BLOCK, KERNEL

    q_weight = te.placeholder([int(d) for d in weight_ty.shape.values], weight_ty.dtype, "q_weight")
    q_scale = te.placeholder([int(d) for d in scale_ty.shape.values], scale_ty.dtype, "q_scale")
    first, rows = tvm.tirx.Var("first", "int64"), tvm.tirx.Var("rows", "int64")
    k = q_weight.shape[1] * scheme.PACK
    out = te.compute((rows, k), lambda r, c: scheme.dequantize(q_weight, q_scale, first + r, c, "float16"), name=BLOCK)
    func = te.create_prim_func([q_weight, q_scale, first, out]).without_attr("global_symbol")
    return func.with_attr(KERNEL_ATTR, KERNEL)  # for the GPU schedule rule that takes it
