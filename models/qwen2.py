"""Qwen2 as transformers defines it (Qwen2ForCausalLM): the Llama decoder with biases on the q, k
and v projections (not on o_proj), rope_theta 1e6, and tied embeddings in the small sizes."""

from __future__ import annotations

from ..errors import ConfigError
from . import llama

ARCHITECTURES = ("Qwen2ForCausalLM",)


class Qwen2Config(llama.LlamaConfig):
    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "Qwen2Config":
        reader = llama.HFConfigReader(hf, source, "Qwen2")
        _, rope_theta, _ = reader.rope(("default",))
        if hf.get("use_sliding_window"):
            raise ConfigError(f"{source}: use_sliding_window=true (windowed attention in the upper layers) is not supported")
        return cls(**reader.common(), rope_theta=rope_theta, rope_scaling=None, qkv_bias=True, o_bias=False, mlp_bias=False)


# The names every family module provides to the compiler: Qwen2's weights are named as Llama's.
Config = Qwen2Config
Model = llama.LlamaForCausalLM
hf_weight_map = llama.hf_weight_map
hf_ignored = llama.hf_ignored
