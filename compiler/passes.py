"""Relax passes of our own (the rest of the pipeline is TVM's)."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, te, topi
from tvm.relax.dpl import PatternContext, is_op, rewrite_bindings, wildcard

from ..targets.schedules.add_rms_norm import KERNEL, KERNEL_ATTR


def _add_rms_norm_kernel(a: relax.Var, b: relax.Var, weight: relax.Var, epsilon: float) -> tvm.tirx.PrimFunc:
    """One kernel writing both the residual sum and its RMS norm (computed in float32 by topi)."""
    ta, tb, tw = (te.placeholder(list(v.ty.shape.values), v.ty.dtype, n) for v, n in ((a, "a"), (b, "b"), (weight, "w")))
    total = te.compute(ta.shape, lambda *i: ta(*i) + tb(*i), name="residual_sum")
    normed = topi.nn.rms_norm(total, tw, axis=[len(ta.shape) - 1], epsilon=epsilon)
    func = te.create_prim_func([ta, tb, tw, total, normed]).without_attr("global_symbol")
    # Opaque to FuseOps (it is fused already), and named for the GPU schedule rule that takes it.
    return func.with_attr({"op_pattern": 8, KERNEL_ATTR: KERNEL})


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
