"""Prefill/decode throughput measured as llama-bench does: random token ids, no tokenizer, the KV
cache emptied between repetitions; pp = prompt tokens / prefill time, tg = generated tokens /
decode time. Decode is greedy (Engine.decode_greedy: the argmax on the device, the host a step
ahead), or with `sample` as a sampling chat decodes at the default temperature and top-p: drawn
on the device (Engine.sample_stream), or on the CPU (and where the library has no `sample` entry)
with the logits to the host each step and a draw there (runtime/sampling.py)."""

from __future__ import annotations

import time
from contextlib import closing

import numpy as np

from ..errors import ConfigError
from .engine import Engine
from .sampling import GenerationConfig, Sampler


def bench_engine(engine: Engine, prompt_len: int, gen_len: int, repeat: int = 3, sample: bool = False) -> dict:
    if prompt_len + gen_len > engine.context_window:
        raise ConfigError(f"--prompt-len {prompt_len} + --gen-len {gen_len} exceeds the context window {engine.context_window}")
    vocab = engine.manifest["model"]["config"]["vocab_size"]
    rng = np.random.default_rng(0)
    prefill, decode = [], []
    for _ in range(repeat + 1):  # the first round warms up (allocations, first-call costs)
        engine.reset()
        prompt = rng.integers(0, vocab, prompt_len)
        start = time.perf_counter()
        token = int(engine.prefill(prompt).argmax())
        middle = time.perf_counter()
        if sample:
            _decode_sampled(engine, token, gen_len)
        else:
            engine.decode_greedy(token, gen_len)
        end = time.perf_counter()
        prefill.append(prompt_len / (middle - start))
        decode.append(gen_len / (end - middle))
    prefill, decode = prefill[1:], decode[1:]
    return {
        "model": engine.manifest["model"]["name"],
        "quantization": engine.manifest["quantization"],
        "device": engine.manifest["target"]["device"],
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "repeat": repeat,
        "prefill_entry": engine.prefill_entry,  # prefill_cublas on CUDA where cuBLAS loads
        "decode": ("sampled on the device" if engine.samples_on_device else "sampled on the host") if sample else "greedy",
        "prefill_tok_s": float(np.mean(prefill)),
        "prefill_tok_s_std": float(np.std(prefill)),
        "decode_tok_s": float(np.mean(decode)),
        "decode_tok_s_std": float(np.std(decode)),
    }


def _decode_sampled(engine: Engine, token: int, steps: int) -> None:
    sampler = Sampler(GenerationConfig(seed=0))
    if engine.samples_on_device:
        with closing(engine.sample_stream(token, sampler, steps)) as stream:
            for _ in stream:
                pass
        return
    for _ in range(steps):
        token = sampler(engine.decode(token))
