"""Mistral as transformers defines it (MistralForCausalLM): the Llama decoder (GQA, no biases) with
sliding-window attention when config.json sets `sliding_window` (Mistral-7B v0.1: 4096; v0.2 and
later: null). The window is served by the paged KV cache's per-layer sliding-window kernels."""

from __future__ import annotations

from ..errors import ConfigError
from . import llama

ARCHITECTURES = ("MistralForCausalLM",)


class MistralConfig(llama.LlamaConfig):
    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "MistralConfig":
        reader = llama.HFConfigReader(hf, source, "Mistral")
        _, rope_theta, _ = reader.rope(("default",))
        window = hf.get("sliding_window")
        if window is not None and (not isinstance(window, int) or window <= 0):
            raise ConfigError(f"{source}: sliding_window={window!r}; expected a positive integer or null")
        return cls(**reader.common(), rope_theta=rope_theta, rope_scaling=None, qkv_bias=False, o_bias=False,
                   mlp_bias=False, sliding_window=window)


# The names every family module provides to the compiler: Mistral's weights are named as Llama's.
Config = MistralConfig
Model = llama.LlamaForCausalLM
hf_weight_map = llama.hf_weight_map
hf_ignored = llama.hf_ignored
