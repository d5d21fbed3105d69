"""The Relax pass pipeline: one list of phases, one pass per line, each with why it is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .passes import fuse_add_rms_norm


def phases(target_module, target, int8_activations: bool = False) -> list[tuple[str, list]]:
    return [
        ("fuse", [
            fuse_add_rms_norm,                          # residual add + RMSNorm -> one kernel
            *target_module.graph_passes(target, int8_activations),  # cuda: a prefill entry whose matmuls run in
                                                        # cuBLAS; --int8-activations: decode matmuls on int8 codes
            relax.transform.LegalizeOps(),              # high-level Relax ops -> TIR PrimFuncs
            relax.transform.AnnotateTIROpPattern(),     # label PrimFuncs: elementwise, reduction, ...
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),                  # group ops with their epilogues by those labels
            relax.transform.FuseTIR(),                  # one PrimFunc per group
            relax.transform.DeadCodeElimination(),      # drop PrimFuncs that fusion left unused
        ]),
        ("schedule", target_module.schedule_passes(target)),  # per-target TIR schedules
        ("lower", [
            relax.transform.RewriteDataflowReshape(),   # reshapes become views, not copies
            relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite(),           # call_tir -> explicit output allocations
            relax.transform.StaticPlanBlockMemory(),    # share storage; sizes bounded by tir_var_upper_bound
            relax.transform.LowerAllocTensor(),
            relax.transform.KillAfterLastUse(),         # free storage as soon as it is dead
            relax.transform.LowerRuntimeBuiltin(),
            relax.transform.ComputePrimValue(),
            relax.transform.VMShapeLower(),             # symbolic shapes -> VM shape-heap code
            relax.transform.AttachGlobalSymbol(),
        ]),
    ]


def run(mod: tvm.IRModule, target_module, target, dump_ir: Path | None = None, int8_activations: bool = False) -> tvm.IRModule:
    """Apply every phase under `target`; with dump_ir, write the IR before and after each."""
    if dump_ir:
        dump_ir.mkdir(parents=True, exist_ok=True)
        (dump_ir / "00-input.py").write_text(mod.script())
    with target, tvm.transform.PassContext():
        for i, (name, passes) in enumerate(phases(target_module, target, int8_activations), start=1):
            mod = tvm.transform.Sequential(passes, name=name)(mod)
            if dump_ir:
                (dump_ir / f"{i:02d}-{name}.py").write_text(mod.script())
    return mod


def temporary_bytes(mod: tvm.IRModule) -> int:
    """Largest static storage one entry point allocates after memory planning (what the VM holds
    besides params and KV cache), read off the lowered module. Sizes are static because
    tir_var_upper_bound bounds every symbolic dimension."""
    alloc = tvm.ir.Op.get("relax.vm.alloc_storage")
    worst = 0
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        total = 0

        def visit(expr):
            nonlocal total
            if isinstance(expr, relax.Call) and expr.op.same_as(alloc):
                size = expr.args[0]
                if isinstance(size, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in size.values):
                    total += int(size.values[0])

        relax.analysis.post_order_visit(func, visit)
        worst = max(worst, total)
    return worst


def entry_kernel_traffic(mod: tvm.IRModule, entry: str) -> list[dict]:
    """The PrimFuncs an entry point calls (itself or through the Relax functions it hands on), with how often and how many bytes their
    statically shaped arguments (weights, activations, outputs) hold per call: a lower bound on
    the memory traffic of one call of the entry. The KV cache's pages have a symbolic size and
    are not counted: attention's traffic is the part of the cache it reads."""
    calls: dict[str, dict] = {}

    def visit(expr):
        if not isinstance(expr, tvm.ir.GlobalVar):
            if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar) and isinstance(mod[expr.op], tvm.tirx.PrimFunc):
                count(expr)
            return
        # A Relax function the entry hands on (a CUDA-graph region): its kernels run at each hand-over.
        if isinstance(mod[expr], relax.Function):
            relax.analysis.post_order_visit(mod[expr], visit)

    def count(expr):
        nbytes = 0
        for arg in expr.args:
            ty = arg.ty
            if isinstance(ty, relax.TensorType) and ty.shape is not None and all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values):
                nbytes += int(np.prod([int(d) for d in ty.shape.values])) * np.dtype(str(ty.dtype)).itemsize
        record = calls.setdefault(expr.op.name_hint, {"name": expr.op.name_hint, "calls": 0, "bytes_per_call": nbytes})
        record["calls"] += 1

    relax.analysis.post_order_visit(mod[entry], visit)
    return sorted(calls.values(), key=lambda r: -r["calls"] * r["bytes_per_call"])
