"""CUDA builds, compiled here (no GPU in CI): the library holds CUDA source for nvcc at load time.
Running them is measured on the GPU machine (docs/benchmarks.md)."""

import pytest

from mlcgen.compiler import pipeline
from mlcgen.compiler.build import export_ir, plan
from mlcgen.errors import ConfigError


def test_cuda_build_uses_cuda_graphs_and_our_norm_schedule(builds):
    p = plan(builds.checkpoint("gqa_tied"), "q4f16_1", "cuda")
    target = p.target_module.tvm_target(p.preset)
    script = pipeline.run(export_ir(p, target), p.target_module, target).script()
    assert "vm.builtin.cuda_graph.run_or_capture" in script
    assert '"mlcgen.kernel": "add_rms_norm"' in script and 'thread="blockIdx.x"' in script
    dist = builds.dist("gqa_tied", "q4f16_1", target="cuda")
    assert (dist / "lib.so").stat().st_size > 0


def test_gpu_targets_refuse_float32_activations(builds):
    with pytest.raises(ConfigError, match="q0f32 computes in float32, which target cuda does not support"):
        plan(builds.checkpoint("gqa_tied"), "q0f32", "cuda")
