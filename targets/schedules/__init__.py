"""Schedule rules of our own, one per file, in dlight's contract: apply(func, target, tunable)
returns a Schedule, or None when the rule does not fit the function."""


def dequantize_blocks(sch) -> list:
    """The q4 layers' dequantize blocks (compiler/layers.py) among a PrimFunc's top-level blocks."""
    from ...compiler.layers import DEQUANTIZE

    return [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint.startswith(DEQUANTIZE)]
