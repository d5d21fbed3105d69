"""Shared helpers: tiny random transformers Llama checkpoints, cached builds, and the HF reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mlcgen.compiler.build import build
from mlcgen.compiler.quantization import get_quantization
from mlcgen.runtime import Engine

# Odd sizes on purpose: 3 heads, vocab 131. K dims stay multiples of 32 for the q4 schemes.
CONFIGS = {
    "mha_untied": dict(hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=3,
                       num_key_value_heads=3, vocab_size=131, tie_word_embeddings=False),
    "gqa_tied": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True),
    "llama3_rope": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=1, vocab_size=120, tie_word_embeddings=False, rope_theta=500000.0,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=32)),
    "codellama_bias": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=2, vocab_size=97, rope_theta=1e6, attention_bias=True, mlp_bias=True),
}


_SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
_LONGROPE = dict(rope_type="longrope", original_max_position_embeddings=64,
                 short_factor=[1.0, 1.1, 1.3, 1.2, 1.5, 1.4, 1.8, 1.6], long_factor=[2.0, 2.4, 2.1, 2.9, 2.5, 2.2, 2.7, 2.3])
# Other families: (architecture, config overrides). Windows of 8 and 12 so that 40 tokens pass them.
FAMILY_CONFIGS = {
    "mistral": ("MistralForCausalLM", dict(_SMALL, sliding_window=8)),
    "qwen2": ("Qwen2ForCausalLM", dict(_SMALL, tie_word_embeddings=True, rope_theta=1e6)),
    "phi3": ("Phi3ForCausalLM", dict(_SMALL, sliding_window=12, pad_token_id=0)),
    "phi3_longrope": ("Phi3ForCausalLM", dict(_SMALL, pad_token_id=0, rope_scaling=_LONGROPE, original_max_position_embeddings=64)),
}


def make_checkpoint(path: Path, name: str = "gqa_tied", seed: int = 0, dtype=torch.float32, **save_kwargs) -> Path:
    """A random transformers model (a Llama from CONFIGS, or a FAMILY_CONFIGS entry) saved with
    save_pretrained. Weights are drawn wider than the HF default so that logits are well separated
    and greedy tokens are not decided by ties."""
    import transformers

    torch.manual_seed(seed)
    arch, overrides = FAMILY_CONFIGS.get(name, ("LlamaForCausalLM", CONFIGS.get(name)))
    model_class = getattr(transformers, arch)
    cfg = model_class.config_class(max_position_embeddings=256, initializer_range=0.2, architectures=[arch], **overrides)
    model = model_class(cfg).to(dtype).eval()
    model.save_pretrained(path, **save_kwargs)
    return path


def hf_model(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def dequantized_hf_model(model_dir: Path, quantization: str) -> LlamaForCausalLM:
    """The transformers model with every weight replaced by what the compiled model computes with
    (linears and embeddings are the 2-D weights in every family here)."""
    model = hf_model(model_dir)
    scheme = get_quantization(quantization)
    state = model.state_dict()
    quantized = {k for k, v in state.items() if v.ndim == 2}
    new = {}
    for k, v in state.items():
        w = v.numpy()
        if k in quantized and hasattr(scheme, "pack"):
            w = scheme.unpack(*scheme.pack(w))
        new[k] = torch.tensor(w.astype(scheme.model_dtype).astype(np.float32))
    model.load_state_dict(new)
    return model


def reference_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].numpy()


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def make_chat_checkpoint(path: Path, family: str = "llama-2", seed: int = 0) -> Path:
    """A random Llama with a trained BPE tokenizer and the family's chat template."""
    from tokenizers_for_tests import bpe_tokenizer

    tok = bpe_tokenizer(family=family, byte_fallback=False)  # random output must decode as text
    torch.manual_seed(seed)
    cfg = LlamaConfig(max_position_embeddings=512, initializer_range=0.2, architectures=["LlamaForCausalLM"],
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **{**CONFIGS["gqa_tied"], "vocab_size": len(tok)})
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Builds:
    """Builds are the slow part: make each (checkpoint, quantization, options) once per session."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict = {}

    def checkpoint(self, name: str) -> Path:
        """A name from CONFIGS, or chat-<family> for a model with tokenizer and chat template."""
        path = self.root / "hf" / name
        if not path.exists():
            if name.startswith("chat-"):
                make_chat_checkpoint(path, name.removeprefix("chat-"))
            else:
                make_checkpoint(path, name)
        return path

    def dist(self, name: str, quantization: str, target: str = "cpu", **options) -> Path:
        key = (name, quantization, target, tuple(sorted(options.items())))
        if key not in self.done:
            out = self.root / "dist" / f"{name}-{quantization}-{len(self.done)}"
            self.done[key] = build(self.checkpoint(name), quantization, target, output=out, log=None, **options)
        return self.done[key]


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> Builds:
    return Builds(tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="session")
def tiny_dist(builds) -> Path:
    return builds.dist("gqa_tied", "q4f16_1")


def engine(dist_dir: Path) -> Engine:
    return Engine(dist_dir)


def manifest(dist_dir: Path) -> dict:
    return json.loads((dist_dir / "manifest.json").read_text())


def gemv_func(n, k):
    """A decode matmul exactly as the model writes it (compiler/layers.py), on its own."""
    from tvm import te

    from mlcgen.compiler.layers import q4_matmul_te

    x = te.placeholder((1, 1, k), "float16", "x")
    w = te.placeholder((n, k // 8), "uint32", "w")
    s = te.placeholder((n, k // 32), "float16", "s")
    return te.create_prim_func([x, w, s, q4_matmul_te(get_quantization("q4f16_1"), x, w, s, "float16")])
