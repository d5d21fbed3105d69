"""Writes examples/tiny-random-llama: a 2-layer Llama (GQA) with random weights, for a smoke build.

It produces noise, not text; it exists so that `mlcgen build` can be tried with nothing
downloaded. Regenerate with:  python examples/make_tiny_random_llama.py
"""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
config = LlamaConfig(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
                     architectures=["LlamaForCausalLM"])
LlamaForCausalLM(config).to(torch.float16).save_pretrained(Path(__file__).parent / "tiny-random-llama")
