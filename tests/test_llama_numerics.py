"""The compiled Llama family against transformers on tiny random models (CPU)."""

import numpy as np
import pytest

from conftest import CONFIGS, dequantized_hf_model, engine, hf_model, reference_logits, rel_err

STEPS = 32
PROMPT = [3, 17, 42, 5, 8, 11, 2]


def teacher_forced_errors(eng, ref_model, vocab: int) -> list[float]:
    """Prefill PROMPT, then decode STEPS fixed tokens; relative logit error at every position."""
    ids = PROMPT + [int(t) for t in np.random.RandomState(1).randint(0, vocab, STEPS)]
    ref = reference_logits(ref_model, ids)
    eng.reset()
    errors = [rel_err(eng.prefill(PROMPT), ref[len(PROMPT) - 1])]
    for pos in range(len(PROMPT), len(ids)):
        errors.append(rel_err(eng.decode(ids[pos]), ref[pos]))
    return errors


def greedy(eng, ref_model, steps: int = STEPS) -> tuple[list[int], list[int]]:
    eng.reset()
    ours = [int(eng.prefill(PROMPT).argmax())]
    for _ in range(steps - 1):
        ours.append(int(eng.decode(ours[-1]).argmax()))
    theirs = []
    for _ in range(steps):
        theirs.append(int(reference_logits(ref_model, PROMPT + theirs)[-1].argmax()))
    return ours, theirs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_q0f32_matches_transformers(builds, name):
    dist = builds.dist(name, "q0f32")
    eng, ref = engine(dist), hf_model(builds.checkpoint(name))
    errors = teacher_forced_errors(eng, ref, CONFIGS[name]["vocab_size"])
    print(f"{name} q0f32: max relative logit error {max(errors):.2e} over {len(errors)} positions")
    assert len(errors) == STEPS + 1
    assert max(errors) <= 1e-4
    ours, theirs = greedy(eng, ref)
    assert ours == theirs
    assert len(set(ours)) > 1, "a constant greedy sequence would make the comparison too easy"


@pytest.mark.parametrize("name", ["gqa_tied", "mha_untied"])
def test_q4f16_1_matches_transformers_with_dequantized_weights(builds, name):
    dist = builds.dist(name, "q4f16_1")
    errors = teacher_forced_errors(engine(dist), dequantized_hf_model(builds.checkpoint(name), "q4f16_1"), CONFIGS[name]["vocab_size"])
    print(f"{name} q4f16_1: max relative logit error {max(errors):.2e}")
    assert max(errors) <= 1e-2


def test_q4f16_1_differs_from_unquantized_reference(builds):
    """The check above must be able to fail: against the original weights the error is far larger."""
    dist = builds.dist("gqa_tied", "q4f16_1")
    errors = teacher_forced_errors(engine(dist), hf_model(builds.checkpoint("gqa_tied")), CONFIGS["gqa_tied"]["vocab_size"])
    assert max(errors) > 1e-2


@pytest.mark.parametrize("quantization,tolerance", [("q4f32_1", 1e-4), ("q0f16", 1e-2)])
def test_other_schemes_match(builds, quantization, tolerance):
    dist = builds.dist("llama3_rope", quantization)
    ref = dequantized_hf_model(builds.checkpoint("llama3_rope"), quantization)
    errors = teacher_forced_errors(engine(dist), ref, CONFIGS["llama3_rope"]["vocab_size"])
    assert max(errors) <= tolerance


@pytest.mark.parametrize("name", ["gqa_tied", "mistral"])
def test_sequences_across_kv_cache_pages(builds, name):
    """A 100-token prompt in two prefills (the second attends to cached pages), then decode steps
    past 2.5 pages of the KV cache (compiler/build.py PAGE_SIZE), against transformers; Mistral
    with its sliding window of 8."""
    from mlcgen.compiler.build import PAGE_SIZE

    n = int(2.5 * PAGE_SIZE) + 8
    ids = [int(t) for t in np.random.RandomState(2).randint(3, 100, n)]
    ref = reference_logits(hf_model(builds.checkpoint(name)), ids)
    eng = engine(builds.dist(name, "q0f32"))
    eng.prefill(ids[:60])
    errors = [rel_err(eng.prefill(ids[60:100]), ref[99])]
    errors += [rel_err(eng.decode(ids[pos]), ref[pos]) for pos in range(100, n)]
    assert eng.length == n and len(errors) == n - 99
    assert max(errors) <= 1e-4
