"""The Llama family as transformers defines it: Llama-2 (MHA), Llama-3/3.1 (GQA, llama3 RoPE
scaling), TinyLlama, CodeLlama; tied or untied embeddings.

Shapes in comments: s = tokens in this forward, d = hidden_size, h/kv = query/key-value heads,
hd = head_dim, f = intermediate_size, v = vocab_size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn

from ..compiler.build import PAGE_SIZE
from ..compiler.kv_cache import KVStep, attend, one_turn
from ..compiler.layers import gate_up_silu
from ..compiler.sampling import sample_token
from ..runtime.sampling import UNIFORMS
from ..errors import ConfigError

ARCHITECTURES = ("LlamaForCausalLM",)



@dataclass(frozen=True)
class LlamaConfig:
    """The decoder every family here shares; mistral.py, qwen2.py and phi3.py read their own
    config.json keys into it (as subclasses with their own from_hf)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None  # None, TVM's llama3 rope_scaling dict, or longrope (applied by longrope())
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    sliding_window: int | None = None  # every layer attends to at most this many tokens

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> "LlamaConfig":
        """Strict reading of a transformers LlamaConfig dict (v4 `rope_theta`/`rope_scaling` or v5
        `rope_parameters`). Missing required keys and unsupported values raise ConfigError."""
        reader = HFConfigReader(hf, source, "Llama")
        rope_type, rope_theta, rope = reader.rope(("default", "llama3"))
        rope_scaling = None
        if rope_type == "llama3":
            keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
            rope_scaling = {"rope_type": "llama3", **reader.take(rope, keys, "llama3 rope scaling")}
        bias = bool(hf.get("attention_bias", False))
        return cls(**reader.common(), rope_theta=rope_theta, rope_scaling=rope_scaling, qkv_bias=bias, o_bias=bias,
                   mlp_bias=bool(hf.get("mlp_bias", False)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class HFConfigReader:
    """Checks shared by the families' from_hf: required keys, allowed values, common fields."""

    def __init__(self, hf: dict[str, Any], source: str, family: str):
        self.hf, self.source, self.family = hf, source, family
        if hf.get("quantization_config"):
            raise ConfigError(f"{source}: pre-quantized checkpoints (quantization_config) are not supported; give the fp16/bf16/fp32 checkpoint")
        self.check("hidden_act", hf.get("hidden_act", "silu"), ("silu",))

    def need(self, key: str):
        if key not in self.hf:
            raise ConfigError(f"{self.source}: missing required key {key!r} for a {self.family} model")
        return self.hf[key]

    def check(self, key: str, value, allowed) -> None:
        if value not in allowed:
            raise ConfigError(f"{self.source}: {key}={value!r} is not supported; expected one of {list(allowed)}")

    def take(self, d: dict, keys, what: str) -> dict:
        missing = [k for k in keys if k not in d]
        if missing:
            raise ConfigError(f"{self.source}: {what} lacks {missing}")
        return {k: d[k] for k in keys}

    def rope(self, supported) -> tuple[str, float, dict]:
        """(rope type, theta, remaining scaling keys) from v5 rope_parameters or v4 rope_scaling."""
        rope = dict(self.hf.get("rope_parameters") or self.hf.get("rope_scaling") or {})
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        self.check("rope_type", rope_type, supported)
        return rope_type, float(rope.pop("rope_theta", self.hf.get("rope_theta", 10000.0))), rope

    def common(self) -> dict:
        heads, hidden = self.need("num_attention_heads"), self.need("hidden_size")
        kv_heads = self.hf.get("num_key_value_heads") or heads
        if heads % kv_heads:
            raise ConfigError(f"{self.source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
        return dict(
            hidden_size=hidden,
            intermediate_size=self.need("intermediate_size"),
            num_hidden_layers=self.need("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=self.hf.get("head_dim") or hidden // heads,
            vocab_size=self.need("vocab_size"),
            rms_norm_eps=self.need("rms_norm_eps"),
            max_position_embeddings=self.need("max_position_embeddings"),
            tie_word_embeddings=bool(self.hf.get("tie_word_embeddings", False)),
        )


def hf_weight_map(cfg: LlamaConfig) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Our weight name -> (HF tensors concatenated along axis 0 to make it, quantizable)."""
    out = {"model.embed_tokens.weight": (("model.embed_tokens.weight",), True)}
    for i in range(cfg.num_hidden_layers):
        hf, ours = f"model.layers.{i}", f"model.layers.{i}"
        qkv = tuple(f"{hf}.self_attn.{p}_proj" for p in "qkv")
        gate_up = (f"{hf}.mlp.gate_proj", f"{hf}.mlp.up_proj")
        out[f"{ours}.self_attn.qkv_proj.weight"] = (tuple(n + ".weight" for n in qkv), True)
        if cfg.qkv_bias:
            out[f"{ours}.self_attn.qkv_proj.bias"] = (tuple(n + ".bias" for n in qkv), False)
        out[f"{ours}.self_attn.o_proj.weight"] = ((f"{hf}.self_attn.o_proj.weight",), True)
        if cfg.o_bias:
            out[f"{ours}.self_attn.o_proj.bias"] = ((f"{hf}.self_attn.o_proj.bias",), False)
        out[f"{ours}.mlp.gate_up_proj.weight"] = (tuple(n + ".weight" for n in gate_up), True)
        out[f"{ours}.mlp.down_proj.weight"] = ((f"{hf}.mlp.down_proj.weight",), True)
        if cfg.mlp_bias:
            out[f"{ours}.mlp.gate_up_proj.bias"] = (tuple(n + ".bias" for n in gate_up), False)
            out[f"{ours}.mlp.down_proj.bias"] = ((f"{hf}.mlp.down_proj.bias",), False)
        out[f"{ours}.input_layernorm.weight"] = ((f"{hf}.input_layernorm.weight",), False)
        out[f"{ours}.post_attention_layernorm.weight"] = ((f"{hf}.post_attention_layernorm.weight",), False)
    out["model.norm.weight"] = (("model.norm.weight",), False)
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = (("lm_head.weight",), True)
    return out


def hf_ignored(cfg: LlamaConfig) -> set[str]:
    """Checkpoint tensors that are known to carry nothing we need."""
    ignored = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(cfg.num_hidden_layers)}
    if cfg.tie_word_embeddings:
        ignored.add("lm_head.weight")  # some tied checkpoints still store the copy
    return ignored


def _is_longrope(cfg: LlamaConfig) -> bool:
    return bool(cfg.rope_scaling) and cfg.rope_scaling["rope_type"] == "longrope"


def longrope(qkv: nn.Tensor, positions: nn.Tensor, cfg: LlamaConfig) -> nn.Tensor:
    """RoPE with per-frequency factors (Phi-3 "longrope"), on the q and k heads of fused qkv
    [b, s, h + 2kv, hd]. Tokens at positions past original_max_position_embeddings use the long
    factors, as transformers does when it reaches them one at a time. (TVM 0.27's own longrope
    kernel does not compile.)"""
    r = cfg.rope_scaling
    half, rotated_heads = cfg.head_dim // 2, cfg.num_attention_heads + cfg.num_key_value_heads
    factors = nn.Tensor.from_const(np.array([r["short_factor"], r["long_factor"]], dtype="float32"))

    def compute(qkv, positions, factors):
        def rope(b, s, h, d):
            pos = positions[b * qkv.shape[1] + s]
            i = d % half
            factor = factors[tirx.Select(pos >= r["original_max_position_embeddings"], 1, 0), i]
            inv_freq = 1.0 / (factor * tirx.power(tirx.const(cfg.rope_theta, "float32"), (2 * i).astype("float32") / cfg.head_dim))
            angle = one_turn(pos.astype("float32") * inv_freq)
            x = qkv[b, s, h, d].astype("float32")
            partner = tirx.Select(d < half, -qkv[b, s, h, d + half], qkv[b, s, h, d - half]).astype("float32")
            out = (x * tirx.cos(angle) + partner * tirx.sin(angle)) * r["attention_factor"]
            return tirx.Select(h < rotated_heads, out.astype(qkv.dtype), qkv[b, s, h, d])

        return te.compute(qkv.shape, rope, name="longrope")

    return nn.op.tensor_expr_op(compute, "longrope", [qkv, positions, factors])


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant):
        self.cfg, self.dtype = cfg, quant.model_dtype
        qkv_out = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
        self.qkv_proj = quant.linear(cfg.hidden_size, qkv_out, bias=cfg.qkv_bias)
        self.o_proj = quant.linear(cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size, bias=cfg.o_bias)

    def forward(self, x: nn.Tensor, kv: KVStep, layer_id: int) -> nn.Tensor:
        c = self.cfg
        b, s, _ = x.shape
        qkv = self.qkv_proj(x).reshape(b, s, c.num_attention_heads + 2 * c.num_key_value_heads, c.head_dim)
        if _is_longrope(c):
            qkv = longrope(qkv, kv.positions, c)
        # RoPE (unless done above) and the append in one kernel, then attention (compiler/kv_cache.py)
        out = attend(qkv, kv, layer_id, c, self.dtype, PAGE_SIZE, rotate=not _is_longrope(c))
        return self.o_proj(out)  # [b, s, d]


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant):
        self.gate_up_proj = quant.linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = quant.linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.down_proj(gate_up_silu(self.gate_up_proj, x))  # [b, s, f]


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant):
        norm = lambda: nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=quant.model_dtype)
        self.input_layernorm = norm()
        self.self_attn = LlamaAttention(cfg, quant)
        self.post_attention_layernorm = norm()
        self.mlp = LlamaMLP(cfg, quant)

    def forward(self, x: nn.Tensor, kv: KVStep, layer_id: int) -> nn.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), kv, layer_id)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant):
        self.embed_tokens = quant.embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, quant) for _ in range(cfg.num_hidden_layers)])
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=quant.model_dtype)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant):
        self.cfg = cfg
        self.quant = quant
        self.model = LlamaModel(cfg, quant)
        self.lm_head = None if cfg.tie_word_embeddings else quant.linear(cfg.hidden_size, cfg.vocab_size, bias=False, out_dtype="float32")

    def _logits(self, x: nn.Tensor) -> nn.Tensor:
        """Final norm + lm_head on the last token only: [b, s, d] -> [b, 1, v] float32."""
        last = nn.op.tensor_expr_op(
            lambda x: te.compute((x.shape[0], 1, x.shape[2]), lambda b, _, j: x[b, x.shape[1] - 1, j], name="last_token"),
            "last_token",
            [x],
        )
        x = self.model.norm(last)
        if self.lm_head is None:
            return self.quant.tied_lm_head(self.model.embed_tokens, x)
        return self.lm_head(x)

    def _forward(self, x: nn.Tensor, kv: KVStep) -> nn.Tensor:
        for i, layer in enumerate(self.model.layers):
            x = layer(x, kv, i)
        return self._logits(x)

    # Exported entry points ----------------------------------------------------------------------
    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.model.embed_tokens(input_ids)  # [s] -> [s, d]

    def prefill(self, input_embed: nn.Tensor, pages, page_indptr, page_values, length_info, k_rope_pos_offset, q_indptr, positions):
        kv = KVStep(pages, page_indptr, page_values, length_info, k_rope_pos_offset, q_indptr, positions)
        return self._forward(input_embed, kv)  # [1, s, d] -> [1, 1, v]; the K/V pages written in place

    def decode(self, input_embed: nn.Tensor, pages, page_indptr, page_values, length_info, k_rope_pos_offset, q_indptr, positions):
        kv = KVStep(pages, page_indptr, page_values, length_info, k_rope_pos_offset, q_indptr, positions)
        return self._forward(input_embed, kv)  # [1, 1, d] -> [1, 1, v]

    def greedy(self, logits: nn.Tensor) -> nn.Tensor:
        """Greedy decoding's next token, left on the device as the embed entry's input ids:
        argmax of the logits [1, 1, v] -> [1] int32 (the first of equal maxima, as numpy's)."""
        best = nn.op.tensor_expr_op(_chunk_argmax, "chunk_argmax", [logits])
        return nn.op.reshape(nn.op.tensor_expr_op(_final_argmax, "greedy_token", [best]), [1])

    def sample(self, logits: nn.Tensor, config: nn.Tensor, uniforms: nn.Tensor, step: nn.Tensor) -> nn.Tensor:
        """Top-p sampling's next token on the device (compiler/sampling.py), left there as the
        embed entry's input ids: logits [1, 1, v], config [1 / temperature, top_p], a table of
        uniform numbers, step [1] (which of them; counted up) -> [1] int32."""
        token, _ = sample_token(logits, config, uniforms, step)
        return token

    def export_spec(self) -> dict:
        c, dtype = self.cfg, self.quant.model_dtype
        packed = {"param_mode": "packed", "effect_mode": "none"}
        kv = partial(KVStep.spec, c.num_hidden_layers, c.num_key_value_heads, c.head_dim, PAGE_SIZE, dtype, c.sliding_window is not None)
        return {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {"input_embed": nn.spec.Tensor([1, "seq_len", c.hidden_size], dtype), **kv("seq_len"), "$": packed},
            "decode": {"input_embed": nn.spec.Tensor([1, 1, c.hidden_size], dtype), **kv(1), "$": packed},
            "greedy": {"logits": nn.spec.Tensor([1, 1, c.vocab_size], "float32"),
                       "$": {"param_mode": "none", "effect_mode": "none"}},
            "sample": {"logits": nn.spec.Tensor([1, 1, c.vocab_size], "float32"), "config": nn.spec.Tensor([2], "float32"),
                       "uniforms": nn.spec.Tensor([UNIFORMS], "float32"), "step": nn.spec.Tensor([1], "int32"),
                       "$": {"param_mode": "none", "effect_mode": "none"}},
        }


ARGMAX_CHUNK = 1024  # logits a thread block reduces in greedy's first stage


def _argmax_reducer():
    """(index, value) pairs -> the larger value's, the smaller index of equal values; in the form
    TVM's cross-thread reduction recognizes. Indices are float32 (exact below 2^24): topi's argmax
    counts in int64, which WGSL has not, and an int32 index against the int64 loop gets casts that
    the recognizer does not accept."""

    def combine(a, b):
        keep_a = tirx.Or(a[1] > b[1], tirx.And(a[1] == b[1], a[0] < b[0]))
        return tirx.Select(keep_a, a[0], b[0]), tirx.Select(a[1] > b[1], a[1], b[1])

    return te.comm_reducer(combine, lambda index, value: (tirx.const(-1, index), tirx.min_value(value)), name="argmax")


def _chunk_argmax(x: te.Tensor) -> te.Tensor:
    """[1, 1, v] -> [chunks, 2]: each chunk's (first index of its largest value, that value), a
    thread block per chunk (one block over a 128K vocabulary took 91 us on an H200)."""
    vocab = int(x.shape[-1])
    chunks = -(-vocab // ARGMAX_CHUNK)
    k = te.reduce_axis((0, ARGMAX_CHUNK), "k")

    def pair(c):
        i = c * ARGMAX_CHUNK + k
        inside = i < vocab
        return (tirx.Select(inside, i.astype("float32"), tirx.const(-1, "float32")),
                tirx.Select(inside, x[0, 0, tirx.min(i, vocab - 1)], tirx.min_value("float32")))

    index, value = te.compute((chunks,), lambda c: _argmax_reducer()(pair(c), axis=k), name="chunk_argmax")
    return te.compute((chunks, 2), lambda c, j: tirx.Select(j == 0, index[c], value[c]), name="chunk_best")


def _final_argmax(best: te.Tensor) -> te.Tensor:
    """[chunks, 2] -> [1, 1] int32: the chunks' winner (the first index among equal maxima)."""
    c = te.reduce_axis((0, best.shape[0]), "c")
    index, _ = te.compute((1, 1), lambda b, s: _argmax_reducer()((best[c, 0], best[c, 1]), axis=c), name="argmax")
    return te.compute((1, 1), lambda b, s: index[b, s].astype("int32"), name="greedy_token")


# The names every family module provides to the compiler.
Config = LlamaConfig
Model = LlamaForCausalLM
