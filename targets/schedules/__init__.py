"""Schedule rules of our own, one per file, in dlight's contract: apply(func, target, tunable)
returns a Schedule, or None when the rule does not fit the function."""


def dequantize_blocks(sch) -> list:
    """The q4 layers' dequantize blocks (compiler/layers.py) among a PrimFunc's top-level blocks."""
    from ...compiler.layers import DEQUANTIZE

    return [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint.startswith(DEQUANTIZE)]


def q4_schedule(func):
    """(a Schedule of `func`, its q4 dequantize blocks) when `func` is a PrimFunc with a q4 matmul,
    else None: where every q4 rule starts."""
    from tvm import s_tir, tirx

    if not isinstance(func, tirx.PrimFunc):
        return None
    sch = s_tir.Schedule(func)
    blocks = dequantize_blocks(sch)
    return (sch, blocks) if blocks else None
