"""Top-p sampling on the device (compiler/sampling.py; Engine.sample_stream) on the CPU build:
the kernels against numpy's nucleus, the stream against step-by-step decoding, the chat on it."""

from contextlib import closing
from itertools import islice

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.frontend import nn

from mlcgen.compiler.sampling import sample_token
from mlcgen.runtime.chat_module import ChatConfig, ChatModule
from mlcgen.runtime.engine import Engine
from mlcgen.runtime.sampling import UNIFORMS, GenerationConfig, Sampler, nucleus

CONFIGS = [(0.7, 0.95), (1.0, 0.5), (2.0, 0.99), (1.0, 1.0), (0.5, 1e-6)]
DRAWS = 1000  # uniform numbers (i + 0.5) / DRAWS


def sampler_vm(vocab: int, target=None, device=None, library=None):
    """The `sample` entry alone, for `vocab` logits, built for `target` (None: the CPU) to run on
    `device`; loaded from a `library` file where the device needs one (Vulkan: our plugin)."""

    class Sample(nn.Module):
        def sample(self, logits, config, uniforms, step):
            return sample_token(logits, config, uniforms, step)[0]

    spec = {"sample": {"logits": nn.spec.Tensor([1, 1, vocab], "float32"), "config": nn.spec.Tensor([2], "float32"),
                       "uniforms": nn.spec.Tensor([UNIFORMS], "float32"), "step": nn.spec.Tensor([1], "int32"),
                       "$": {"param_mode": "none", "effect_mode": "none"}}}
    target = target or tvm.target.Target("llvm")
    with target:  # GPU kernels are scheduled where they are made
        mod, _ = Sample().export_tvm(spec)
    executable = tvm.compile(mod, target)
    if library:
        executable.export_library(str(library))
        executable = tvm.runtime.load_module(str(library))
    device = device or tvm.cpu()
    return relax.VirtualMachine(executable, device), device


def draws(vm, device, logits: np.ndarray, temperature: float, top_p: float) -> dict[int, int]:
    """How often each token is drawn over the uniform grid, UNIFORMS of it a table (the entry
    counts its step up in the table)."""
    x = tvm.runtime.tensor(logits.reshape(1, 1, -1), device)
    config = tvm.runtime.tensor(np.array([1 / temperature, top_p], np.float32), device)
    grid = ((np.arange(DRAWS) + 0.5) / DRAWS).astype(np.float32)
    counts: dict[int, int] = {}
    for start in range(0, DRAWS, UNIFORMS):
        table = np.resize(grid[start : start + UNIFORMS], UNIFORMS)
        step = tvm.runtime.tensor(np.zeros(1, np.int32), device)
        calls = min(UNIFORMS, DRAWS - start)
        for _ in range(calls):
            token = int(vm["sample"](x, config, tvm.runtime.tensor(table, device), step).numpy()[0])
            counts[token] = counts.get(token, 0) + 1
        assert int(step.numpy()[0]) == calls
    return counts


def assert_draws_follow_the_nucleus(vm, device, logits: np.ndarray) -> None:
    """Over an even grid of uniform numbers every nucleus token is drawn as often as its share
    (within the grid's rounding: one draw), and nothing outside the nucleus; where every nucleus
    token's share is above two draws, each of them is drawn."""
    for temperature, top_p in CONFIGS:
        counts, want = draws(vm, device, logits, temperature, top_p), nucleus(logits, temperature, top_p)
        assert set(counts) <= set(want), (temperature, top_p)
        assert max(abs(counts.get(t, 0) - DRAWS * p) for t, p in want.items()) <= 1.001, (temperature, top_p)
        if min(want.values()) > 2 / DRAWS:
            assert set(counts) == set(want), (temperature, top_p)


def rows(vocab: int) -> list[np.ndarray]:
    """A flat row of logits and a peaked one (12 tokens far above the rest)."""
    rng = np.random.default_rng(vocab)
    flat = (3 * rng.standard_normal(vocab)).astype(np.float32)
    peaked = flat.copy()
    peaked[rng.choice(vocab, 12, replace=False)] += 12.0
    return [flat, peaked]


@pytest.mark.parametrize("vocab", [100, 3000])  # one chunk; three, the last one partial
def test_sample_kernels_draw_the_nucleus_by_its_probabilities(vocab):
    vm, device = sampler_vm(vocab)
    for logits in rows(vocab):
        assert_draws_follow_the_nucleus(vm, device, logits)
    peaked = rows(vocab)[1]
    assert draws(vm, device, peaked, 1.0, 1e-6) == {int(peaked.argmax()): DRAWS}


def step_by_step(engine, token: int, sampler: Sampler, steps: int) -> list[int]:
    """decode + the sample entry, one call each a step, with the sampler's tables of uniform
    numbers (a new one every UNIFORMS steps; the entry counts the step)."""
    state = [tvm.runtime.tensor(a, engine.device) for a in (sampler.device_config(), sampler.uniforms(), np.zeros(1, np.int32))]
    tokens = []
    for i in range(steps):
        if i and i % UNIFORMS == 0:
            state[1] = tvm.runtime.tensor(sampler.uniforms(), engine.device)
        logits = tvm.runtime.tensor(engine.decode(token).reshape(1, 1, -1), engine.device)
        token = int(engine.vm["sample"](logits, *state).numpy()[0])
        tokens.append(token)
    return tokens


def test_sample_stream_is_decode_then_the_sample_entry(builds):
    """Engine.sample_stream (drawn on the device, the host a step ahead) gives the tokens of decode +
    the sample entry called on those logits with the sampler's uniform numbers, past the first
    table of them, and leaves the cache as that loop does; a closed stream pops the step it
    issued ahead."""
    dist = builds.dist("gqa_tied", "q4f16_1", context_window=512)
    ref, dev = Engine(dist), Engine(dist)
    prompt, config, steps = [5, 9, 13, 21], GenerationConfig(temperature=1.5, top_p=0.95, seed=3), UNIFORMS + 40
    first = int(ref.prefill(prompt).argmax())
    dev.prefill(prompt)
    tokens = step_by_step(ref, first, Sampler(config), steps)
    with closing(dev.sample_stream(first, Sampler(config), steps)) as stream:
        assert list(stream) == tokens
    assert dev.length == ref.length == len(prompt) + steps
    assert len(set(tokens)) > 3, "too few distinct tokens to tell draws apart"
    dev.reset(), dev.prefill(prompt)
    with closing(dev.sample_stream(first, Sampler(config))) as stream:
        assert [next(stream) for _ in range(5)] == tokens[:5]
    assert dev.length == len(prompt) + 5  # `first` and the tokens yielded but the last
    with pytest.raises(ValueError, match="top_k"):
        dev.sample_stream(first, Sampler(config.updated(top_k=5)))


def test_sampling_chat_draws_on_the_device_and_keeps_its_cache(builds, monkeypatch):
    """A chat at the default temperature and top-p draws on the device (forced here on the CPU):
    no step's logits come to the host. A seed repeats the replies; the KV cache holds what the chat records after replies
    cut by the full cache, max_gen_len and a stream abandoned midway."""
    dist = builds.dist("chat-llama-2", "q0f32", context_window=96, prefill_chunk=32)

    def replies(seed: int) -> list:
        chat = ChatModule(dist, chat_config=ChatConfig(generation=GenerationConfig(max_gen_len=40, seed=seed)))
        assert not chat.engine.samples_on_device  # the CPU draws in numpy (faster there); GPUs on the device
        chat.engine.samples_on_device = True
        monkeypatch.setattr(chat.engine, "decode", lambda *a: pytest.fail("a sampling chat took logits to the host"))
        out = []
        for i in range(3):  # the window fills
            out.append((chat.generate(f"Turn {i}: tell me about the lazy dog."), chat.last.finish_reason))
            assert chat.engine.length == len(chat.cached)
        stream = chat.generate("And the cat?", GenerationConfig(max_gen_len=40, seed=seed), stream=True)
        out.append(list(islice(stream, 3)))
        stream.close()
        assert chat.engine.length == len(chat.cached)
        out.append(chat.generate("And the fox?", GenerationConfig(max_gen_len=5, seed=seed)))
        assert chat.last.decode_tokens <= 4 and chat.engine.length == len(chat.cached)
        return out

    first = replies(0)
    assert replies(0) == first
    assert replies(1) != first
    assert "length" in [reason for _, reason in first[:3]]
