"""Weight quantization schemes: one object per scheme.

Each scheme owns its storage format, the numpy packer/unpacker (used by weight conversion and as the
test oracle), the dequantize expression used inside compiled kernels, and the nn layers that hold
quantized weights. This module imports no TVM compiler code, so weight conversion can run where only
the TVM runtime is installed; the nn layers are imported when a model is being compiled.

q4 group layout (MLC-LLM q4f16_1 compatible), for a weight W of shape [N, K] (out, in):
    q_weight uint32 [N, K/8]   word j of row n holds k = 8j..8j+7, lowest nibble = lowest k
    q_scale  fp16   [N, K/32]  per group of 32 consecutive k: scale = max|w| / 7
    code = clamp(round(w / scale) + 7, 0, 14);   w ~= (code - 7) * scale
Where a target binds at most `max_param_bytes` per tensor (Vulkan), a weight whose q_weight would
exceed it is stored as row chunks, `{prefix}.q_weight.{i}` / `{prefix}.q_scale.{i}`, each within the
limit; the layers gather and matmul across the chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ConfigError

FLOAT_MAGIC = 0x4B000000  # float32 2^23: a small integer ORed into its mantissa gives 2^23 + it


@dataclass(frozen=True)
class StoredParam:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class NoQuant:
    """Weights kept in full precision (q0f16, q0f32)."""

    name: str
    model_dtype: str

    def stored_params(self, weight: str, shape: tuple[int, ...], quantized: bool) -> list[StoredParam]:
        return [StoredParam(weight, tuple(shape), self.model_dtype)]

    def quantize(self, weight: str, w: np.ndarray, quantized: bool) -> dict[str, np.ndarray]:
        return {weight: w.astype(self.model_dtype)}

    def restore(self, weight: str, stored: dict[str, np.ndarray], quantized: bool) -> np.ndarray:
        """The float32 weight the compiled model computes with."""
        return stored[weight].astype(np.float32)

    def linear(self, in_features: int, out_features: int, bias: bool, out_dtype: str | None = None):
        from .layers import FloatLinear  # compile-time only (see module docstring)

        return FloatLinear(in_features, out_features, bias, self.model_dtype, out_dtype or self.model_dtype)

    def embedding(self, vocab_size: int, dim: int):
        from tvm.relax.frontend import nn

        return nn.Embedding(vocab_size, dim, dtype=self.model_dtype)

    def tied_lm_head(self, embedding, x):
        from tvm.relax.frontend import nn

        return nn.op.matmul(x, nn.op.permute_dims(embedding.weight), out_dtype="float32")


@dataclass(frozen=True)
class GroupQuant4:
    """4-bit symmetric group quantization along K (q4f16_1, q4f32_1); layout in the module docstring."""

    name: str
    model_dtype: str  # activations, and the dtype of the scales
    group_size: int = 32
    max_code: int = 7  # codes 0..14 hold -7..7; 15 is unused, as in MLC-LLM
    max_param_bytes: int | None = None  # the target's per-tensor limit: larger weights go in row chunks

    PACK = 8  # 4-bit codes per uint32 word
    CHUNK_ROWS = 256  # chunks hold a multiple of this many rows (whole GEMV thread blocks)

    def row_chunks(self, n: int, k: int) -> list[int]:
        """Rows per stored chunk of an [n, k] weight: [n] when its q_weight fits in max_param_bytes."""
        row_bytes = k // self.PACK * 4
        if not self.max_param_bytes or n * row_bytes <= self.max_param_bytes:
            return [n]
        rows = self.max_param_bytes // row_bytes // self.CHUNK_ROWS * self.CHUNK_ROWS
        if rows == 0:
            raise ConfigError(f"{self.name}: {self.CHUNK_ROWS} rows of K={k} exceed the target's {self.max_param_bytes} bytes per tensor")
        return [rows] * (n // rows) + ([n % rows] if n % rows else [])

    def stored_params(self, weight: str, shape: tuple[int, ...], quantized: bool) -> list[StoredParam]:
        if not quantized:
            return [StoredParam(weight, tuple(shape), self.model_dtype)]
        n, k = shape
        if k % self.group_size:
            raise ConfigError(f"{self.name}: {weight} has K={k}, which is not a multiple of the group size {self.group_size}")
        return [p for w_name, s_name, rows in self._chunk_names(weight, n, k)
                for p in (StoredParam(w_name, (rows, k // self.PACK), "uint32"),
                          StoredParam(s_name, (rows, k // self.group_size), self.model_dtype))]

    def _chunk_names(self, weight: str, n: int, k: int) -> list[tuple[str, str, int]]:
        """(q_weight name, q_scale name, rows) of each stored chunk of `weight`."""
        prefix = weight.removesuffix(".weight")
        chunks = self.row_chunks(n, k)
        tags = [""] if len(chunks) == 1 else [f".{i}" for i in range(len(chunks))]
        return [(f"{prefix}.q_weight{t}", f"{prefix}.q_scale{t}", rows) for t, rows in zip(tags, chunks)]

    def quantize(self, weight: str, w: np.ndarray, quantized: bool) -> dict[str, np.ndarray]:
        if not quantized:
            return {weight: w.astype(self.model_dtype)}
        q, s = self.pack(w)
        out, start = {}, 0
        for w_name, s_name, rows in self._chunk_names(weight, *w.shape):
            out[w_name], out[s_name] = q[start:start + rows], s[start:start + rows]
            start += rows
        return out

    def restore(self, weight: str, stored: dict[str, np.ndarray], quantized: bool) -> np.ndarray:
        """The float32 weight the compiled model computes with (`stored`: what quantize returned)."""
        if not quantized:
            return stored[weight].astype(np.float32)
        words = [a for a in stored.values() if a.dtype == np.uint32]
        n, k = sum(a.shape[0] for a in words), words[0].shape[1] * self.PACK
        return np.concatenate([self.unpack(stored[w_name], stored[s_name]) for w_name, s_name, _ in self._chunk_names(weight, n, k)])

    def pack(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, K] float -> (uint32 [N, K/8], scale [N, K/32])."""
        n, k = w.shape
        groups = w.astype(np.float32).reshape(n, k // self.group_size, self.group_size)
        scale = (np.abs(groups).max(axis=2) / self.max_code).astype(self.model_dtype)
        # Codes are computed against the stored (rounded) scale so that unpack(pack(w)) is what
        # the kernels see; an all-zero group has scale 0 and codes of 7 (value 0).
        s32 = scale.astype(np.float32)[:, :, None]
        ratio = np.divide(groups, s32, out=np.zeros_like(groups), where=s32 != 0)
        codes = np.clip(np.rint(ratio) + self.max_code, 0, 2 * self.max_code).astype(np.uint32)
        codes = codes.reshape(n, k // self.PACK, self.PACK)
        shifts = (np.arange(self.PACK, dtype=np.uint32) * 4)[None, None, :]
        words = np.bitwise_or.reduce(codes << shifts, axis=2).astype(np.uint32)
        return words, scale

    def unpack(self, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Inverse of pack, in float32: the weight the compiled kernels compute with."""
        n = q.shape[0]
        shifts = (np.arange(self.PACK, dtype=np.uint32) * 4)[None, None, :]
        codes = ((q[:, :, None] >> shifts) & 0xF).reshape(n, -1).astype(np.float32)
        groups = (codes - self.max_code).reshape(n, scale.shape[1], self.group_size)
        return (groups * scale.astype(np.float32)[:, :, None]).reshape(n, -1)

    def dequantize(self, q_weight, q_scale, n, k, dtype: str | None = None):
        """TensorIR expression of weight[n, k] in `dtype` (default: the model dtype), for use
        inside a te.compute. The matmuls ask for float32: the code is then ORed into the mantissa
        of 2^23, which gives the float 2^23 + code without an int->float conversion (a quarter-rate
        instruction on GPUs, and the decode GEMV's bottleneck); (code - max_code) * scale is exact
        in float32, equal to unpack()."""
        from tvm import tirx  # compile-time only (see module docstring)

        word = q_weight[n, k // self.PACK]
        code = (word >> (k % self.PACK * 4).astype("uint32")) & 0xF
        scale = q_scale[n, k // self.group_size]
        if (dtype or self.model_dtype) == "float32":
            magic = tirx.reinterpret("float32", code | tirx.const(FLOAT_MAGIC, "uint32"))  # 2^23 + code
            return (magic - tirx.const(2**23 + self.max_code, "float32")) * scale.astype("float32")
        return (code.astype(self.model_dtype) - self.max_code) * scale

    def linear(self, in_features: int, out_features: int, bias: bool, out_dtype: str | None = None):
        from .layers import GroupQuantLinear  # compile-time only (see module docstring)

        return GroupQuantLinear(self, in_features, out_features, bias, out_dtype or self.model_dtype)

    def embedding(self, vocab_size: int, dim: int):
        from .layers import GroupQuantEmbedding

        return GroupQuantEmbedding(self, vocab_size, dim)

    def tied_lm_head(self, embedding, x):
        from .layers import chunked_matmul

        return chunked_matmul(self, x, embedding.chunks(), out_dtype="float32")


QUANTIZATIONS = {
    "q0f32": NoQuant("q0f32", "float32"),
    "q0f16": NoQuant("q0f16", "float16"),
    "q4f16_1": GroupQuant4("q4f16_1", "float16"),
    "q4f32_1": GroupQuant4("q4f32_1", "float32"),
}


def get_quantization(name: str, max_param_bytes: int | None = None):
    """The scheme called `name`; max_param_bytes: the target's per-tensor limit (manifest key
    "max_param_bytes"), which only the group-quantized schemes honour, by storing row chunks."""
    if name not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {name!r}; choose one of: {', '.join(QUANTIZATIONS)}")
    scheme = QUANTIZATIONS[name]
    return replace(scheme, max_param_bytes=max_param_bytes) if max_param_bytes and isinstance(scheme, GroupQuant4) else scheme
