"""q4 packing against a hand-written golden block, and the numpy oracle's own properties."""

import numpy as np
import pytest

from mlcgen.compiler.quantization import QUANTIZATIONS, get_quantization
from mlcgen.errors import ConfigError

# One group of 32 weights written out by hand: codes 0..14 (value (code - 7) * 0.5), max |w| = 3.5.
GOLDEN_CODES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 7,
                14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 7]
# Lowest nibble = lowest k, 8 nibbles per word.
GOLDEN_WORDS = [0x76543210, 0x7EDCBA98, 0x789ABCDE, 0x70123456]


def golden_row(jitter: float = 0.0) -> np.ndarray:
    w = (np.array(GOLDEN_CODES, np.float32) - 7) * 0.5
    inner = (np.abs(w) < 3.5)  # the two extremes set the scale; the rest may move within half a step
    w[inner] += jitter * np.where(np.arange(32) % 2, 1, -1)[inner]
    return w


def test_q4f16_1_packs_golden_block_bit_for_bit():
    q4 = get_quantization("q4f16_1")
    w = np.stack([golden_row(), golden_row(jitter=0.2), np.zeros(32, np.float32)])
    words, scale = q4.pack(w)
    assert words.dtype == np.uint32 and words.shape == (3, 4)
    assert scale.dtype == np.float16 and scale.shape == (3, 1)
    assert [hex(x) for x in words[0]] == [hex(x) for x in GOLDEN_WORDS]
    assert [hex(x) for x in words[1]] == [hex(x) for x in GOLDEN_WORDS]  # rounding to nearest
    assert list(words[2]) == [0x77777777] * 4  # an all-zero group: scale 0, code 7
    assert list(scale[:, 0]) == [0.5, 0.5, 0.0]
    assert np.array_equal(q4.unpack(words, scale)[0], golden_row())


def test_q4_roundtrip_error_is_at_most_half_a_step():
    q4 = get_quantization("q4f16_1")
    w = np.random.RandomState(0).standard_normal((48, 96)).astype(np.float32)
    words, scale = q4.pack(w)
    err = np.abs(q4.unpack(words, scale) - w).reshape(48, 3, 32)
    step = scale.astype(np.float32)[:, :, None]
    assert np.all(err <= step / 2 + 1e-3 * step)
    codes = (words[:, :, None] >> (np.arange(8, dtype=np.uint32) * 4)) & 0xF
    assert codes.max() <= 14


def test_q4f32_1_keeps_float32_scales():
    q4 = get_quantization("q4f32_1")
    words, scale = q4.pack(np.random.RandomState(1).standard_normal((4, 64)).astype(np.float32))
    assert scale.dtype == np.float32 and words.shape == (4, 8)


def test_unknown_quantization_lists_choices():
    with pytest.raises(ConfigError, match="q4f16_1") as e:
        get_quantization("q3f16_0")
    assert "q3f16_0" in str(e.value) and all(name in str(e.value) for name in QUANTIZATIONS)


def test_k_not_multiple_of_group_is_rejected():
    with pytest.raises(ConfigError, match="multiple of the group size 32"):
        get_quantization("q4f16_1").stored_params("x.weight", (8, 40), quantized=True)



def test_float32_dequantize_expression_equals_unpack_for_every_code():
    """The kernels' float32 dequantize (code ORed into the mantissa of 2^23) against the numpy
    oracle, bit for bit, over random words (all 16 codes) and scales."""
    import tvm
    from tvm import te

    q4 = get_quantization("q4f16_1")
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**32, size=(8, 16), dtype=np.uint32)
    scale = (rng.standard_normal((8, 4)) * 0.05).astype(np.float16)
    w, s = te.placeholder(words.shape, "uint32", "w"), te.placeholder(scale.shape, "float16", "s")
    out = te.compute((8, 128), lambda n, k: q4.dequantize(w, s, n, k, "float32"), name="dequantize")
    kernel = tvm.compile(te.create_prim_func([w, s, out]), "llvm")
    got = tvm.runtime.empty((8, 128), "float32", tvm.cpu())
    kernel(tvm.runtime.tensor(words), tvm.runtime.tensor(scale), got)
    assert np.array_equal(got.numpy(), q4.unpack(words, scale))


def test_weights_past_the_targets_tensor_limit_are_stored_in_row_chunks():
    row_bytes = 64 // 8 * 4
    q4 = get_quantization("q4f16_1", max_param_bytes=300 * row_bytes)  # room for 300 rows: chunks of 256
    assert q4.row_chunks(1100, 64) == [256, 256, 256, 256, 76]
    assert q4.row_chunks(256, 64) == [256] and get_quantization("q4f16_1").row_chunks(10**6, 64) == [10**6]
    stored = q4.stored_params("lm_head.weight", (1100, 64), quantized=True)
    assert [(p.name, p.shape) for p in stored[:2]] == [("lm_head.q_weight.0", (256, 8)), ("lm_head.q_scale.0", (256, 2))]
    assert [p.shape[0] for p in stored if "q_weight" in p.name] == [256, 256, 256, 256, 76]
    w = np.random.RandomState(2).standard_normal((1100, 64)).astype(np.float32)
    chunks = q4.quantize("lm_head.weight", w, quantized=True)
    assert {k: v.shape for k, v in chunks.items()} == {p.name: p.shape for p in stored}
    assert all(v.nbytes <= 300 * row_bytes for v in chunks.values())
    whole = get_quantization("q4f16_1")
    assert np.array_equal(q4.restore("lm_head.weight", chunks, True), whole.unpack(*whole.pack(w)))
    with pytest.raises(ConfigError, match="256 rows of K=64 exceed"):
        get_quantization("q4f16_1", max_param_bytes=100 * row_bytes).row_chunks(1100, 64)
