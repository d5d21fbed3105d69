"""Phi-3 as transformers defines it (Phi3ForCausalLM): the Llama decoder with q/k/v and gate/up
already fused in the checkpoint, sliding-window attention where config.json sets it (Phi-3-mini-4k:
2047), and RoPE either plain or "longrope" (Phi-3-*-128k: per-frequency short/long factors and an
attention factor; see llama.longrope for how the long factors are chosen).
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from . import llama

ARCHITECTURES = ("Phi3ForCausalLM",)


class Phi3Config(llama.LlamaConfig):
    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "Phi3Config":
        reader = llama.HFConfigReader(hf, source, "Phi-3")
        rope_type, rope_theta, rope = reader.rope(("default", "longrope", "su"))
        reader.check("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0), (1.0,))
        common = reader.common()
        rope_scaling = None
        if rope_type in ("longrope", "su"):  # "su" is the name the first Phi-3 releases used
            factors = reader.take(rope, ("short_factor", "long_factor"), "longrope rope scaling")
            original = rope.get("original_max_position_embeddings", hf.get("original_max_position_embeddings"))
            if original is None:
                raise ConfigError(f"{source}: longrope needs original_max_position_embeddings")
            half = common["head_dim"] // 2
            if len(factors["short_factor"]) != half or len(factors["long_factor"]) != half:
                raise ConfigError(f"{source}: longrope short_factor/long_factor need head_dim/2 = {half} values each")
            scale = common["max_position_embeddings"] / original
            attention_factor = rope.get("attention_factor") or (math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)
            rope_scaling = {"rope_type": "longrope", "original_max_position_embeddings": original,
                            "attention_factor": attention_factor, **factors}
        return cls(**common, rope_theta=rope_theta, rope_scaling=rope_scaling, qkv_bias=False, o_bias=False,
                   mlp_bias=False, sliding_window=hf.get("sliding_window"))


def hf_weight_map(cfg: Phi3Config) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Our weight name -> (HF tensors, quantizable): the checkpoint holds the fused weights already."""
    out = {"model.embed_tokens.weight": (("model.embed_tokens.weight",), True)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        for name, quantized in (("self_attn.qkv_proj", True), ("self_attn.o_proj", True), ("mlp.gate_up_proj", True),
                                ("mlp.down_proj", True), ("input_layernorm", False), ("post_attention_layernorm", False)):
            out[f"{p}.{name}.weight"] = ((f"{p}.{name}.weight",), quantized)
    out["model.norm.weight"] = (("model.norm.weight",), False)
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = (("lm_head.weight",), True)
    return out


# The names every family module provides to the compiler.
Config = Phi3Config
Model = llama.LlamaForCausalLM
hf_ignored = llama.hf_ignored
