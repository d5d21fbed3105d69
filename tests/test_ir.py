"""Structure of the compiled IR (CPU target): what fusion did, and what was never materialized."""

import re

import pytest

from mlcgen.compiler import pipeline
from mlcgen.compiler.build import export_ir, plan


def lowered(builds, quantization: str):
    p = plan(builds.checkpoint("gqa_tied"), quantization, "cpu")
    target = p.target_module.tvm_target(p.preset)
    mod = pipeline.run(export_ir(p, target), p.target_module, target)
    return mod.script(), p.manifest, mod


def float_shapes(script: str) -> set[tuple[int, ...]]:
    """Static shapes of every float buffer (TIR params and allocations) and Relax tensor."""
    script = re.sub(r"T\.int64\((\d+)\)", r"\1", script)
    found = set()
    pattern = r'(T\.Buffer|T\.sblock_alloc_buffer|T\.alloc_buffer|R\.Tensor)\(\(([^()]*)\)(?:,\s*(?:dtype=)?"(\w+)")?'
    for _, dims, dtype in re.findall(pattern, script):
        parts = [d.strip() for d in dims.split(",") if d.strip()]
        if all(d.isdigit() for d in parts) and (dtype or "float32").startswith(("float", "bfloat")):
            found.add(tuple(int(d) for d in parts))
    return found


def quantized_weight_shapes(manifest: dict) -> set[tuple[int, ...]]:
    shapes = set()
    for w in manifest["weights"]:
        if w["quantized"]:
            n, k = w["shape"]
            shapes |= {(n, k), (k, n)}
    return shapes


@pytest.fixture(scope="module")
def q4_ir(builds):
    return lowered(builds, "q4f16_1")


def test_no_full_precision_copy_of_any_quantized_weight(q4_ir):
    script, manifest, _ = q4_ir
    forbidden = quantized_weight_shapes(manifest)
    assert len(forbidden) >= 6
    assert not (float_shapes(script) & forbidden)


def test_the_check_sees_full_precision_weights(builds):
    """Positive control: in an unquantized build the same check finds every weight."""
    script, manifest, _ = lowered(builds, "q0f32")
    found = float_shapes(script)
    missing = [w["name"] for w in manifest["weights"] if w["quantized"] and tuple(w["shape"]) not in found]
    assert not missing


def test_fusion(q4_ir):
    script, manifest, _ = q4_ir
    layers = manifest["model"]["config"]["num_hidden_layers"]
    prefill = script[script.index("def prefill("):]
    prefill = prefill[: prefill.index("\n    @")] if "\n    @" in prefill else prefill
    # every residual add that feeds an RMSNorm is one kernel with it (all but the last layer's output)
    assert len(re.findall(r"cls\.fused_add_rms_norm\d*\(", prefill)) == 2 * layers - 1
    # dequantize lives inside the matmul kernels; elementwise epilogues join them
    assert re.search(r"cls\.fused_q4_matmul\d*_add\d*\(", prefill)
    assert re.search(r"cls\.fused_split\d*_silu\d*_multiply\d*\(", prefill)
    assert "dequantize" not in prefill and not re.search(r"cls\.astype", prefill)


def test_memory_is_planned_statically(q4_ir):
    script, _, mod = q4_ir
    sizes = re.findall(r"R\.vm\.alloc_storage\(R\.shape\(\[(\w+)\]\)", script)
    assert sizes and all(s.isdigit() for s in sizes), "every storage size is a constant after planning"
    assert pipeline.temporary_bytes(mod) >= max(int(s) for s in sizes)
