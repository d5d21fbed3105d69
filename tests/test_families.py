"""Mistral, Qwen2 and Phi-3 against transformers on tiny random models (CPU)."""

import pytest

from conftest import FAMILY_CONFIGS, dequantized_hf_model, engine, hf_model, manifest, rel_err, reference_logits
from test_llama_numerics import PROMPT, STEPS, greedy, teacher_forced_errors


@pytest.mark.parametrize("name", list(FAMILY_CONFIGS))
def test_q0f32_matches_transformers(builds, name):
    dist = builds.dist(name, "q0f32")
    eng, ref = engine(dist), hf_model(builds.checkpoint(name))
    errors = teacher_forced_errors(eng, ref, 100)
    print(f"{name} q0f32: max relative logit error {max(errors):.2e}")
    assert len(PROMPT) + STEPS > 2 * 12, "the sequence must pass the sliding windows"
    assert max(errors) <= 1e-4
    ours, theirs = greedy(eng, ref)
    assert ours == theirs and len(set(ours)) > 1
    assert manifest(dist)["model"]["family"] == {"mistral": "mistral", "qwen2": "qwen2"}.get(name, "phi3")


@pytest.mark.parametrize("name", ["mistral", "phi3"])
def test_prompt_longer_than_the_sliding_window_in_one_prefill(builds, name):
    ids = list(range(3, 43))  # 40 tokens, windows of 8 and 12
    eng = engine(builds.dist(name, "q0f32"))
    assert rel_err(eng.prefill(ids), reference_logits(hf_model(builds.checkpoint(name)), ids)[-1]) <= 1e-4


@pytest.mark.parametrize("name", list(FAMILY_CONFIGS))
@pytest.mark.parametrize("quantization", ["q4f16_1", "q0f16"])
def test_quantized_builds_match_transformers_with_the_same_weights(builds, name, quantization):
    eng = engine(builds.dist(name, quantization))
    errors = teacher_forced_errors(eng, dequantized_hf_model(builds.checkpoint(name), quantization), 100)
    assert max(errors) <= 1e-2
