"""Host time of one sampled token (temperature / top-k / top-p, runtime/sampling.py) at Llama-2 and
Llama-3 vocabulary sizes, against the plain full-sort draw it replaced, in the same run; and
whether both draw the same tokens from the same seeds.

    python benchmarks/sampler_speed.py

A sampling chat moves the logits to the host each step and draws there, so this time adds to every
decode step (a 7B step on the H200 takes ~1.8 ms; docs/benchmarks.md). Logits: a peaked row (a
trained model's is, mostly) and a flat one (its nucleus holds thousands of tokens).
"""

from __future__ import annotations

import time

import numpy as np

from mlcgen.runtime.sampling import GenerationConfig, Sampler

VOCABS = {"llama2 (32000)": 32000, "llama3 (128256)": 128256}
CONFIGS = {"temperature 0.7, top_p 0.95 (the default)": {}, "top_k 40": {"top_k": 40, "top_p": 1.0},
           "temperature 1.0, top_p 0.9": {"temperature": 1.0, "top_p": 0.9}}


def full_sort_draw(sampler: Sampler, logits: np.ndarray) -> int:
    """The draw as it was: a stable sort of the whole row, then top-k and top-p on it."""
    c = sampler.config
    logits = logits.astype(np.float64) / c.temperature
    order = np.argsort(-logits, kind="stable")
    if c.top_k:
        order = order[: c.top_k]
    probs = np.exp(logits[order] - logits[order[0]])
    probs /= probs.sum()
    keep = min(int(np.searchsorted(np.cumsum(probs), c.top_p)) + 1, len(order))  # it raised without min() when
    probs = probs[:keep] / probs[:keep].sum()  # a top-k set's rounded mass fell short of top_p
    return int(order[sampler.rng.choice(keep, p=probs)])


def rows(vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(vocab).astype(np.float32)
    peaked = flat * 2.0
    peaked[rng.choice(vocab, 20, replace=False)] += rng.uniform(8, 14, 20).astype(np.float32)
    return {"peaked": peaked, "flat": flat}


def ms_per_token(draw, reps: int = 30) -> float:
    draw()
    start = time.perf_counter()
    for _ in range(reps):
        draw()
    return (time.perf_counter() - start) / reps * 1e3


def main() -> None:
    print("| vocabulary | logits | sampling | full sort, ms a token | now, ms a token | same tokens (200 seeds) |")
    print("|---|---|---|---|---|---|")
    for vocab_name, vocab in VOCABS.items():
        for row_name, logits in rows(vocab).items():
            for config_name, options in CONFIGS.items():
                config = GenerationConfig(seed=0, **options)
                old, new = Sampler(config), Sampler(config)
                t_old = ms_per_token(lambda: full_sort_draw(old, logits))
                t_new = ms_per_token(lambda: new(logits))
                same = all(full_sort_draw(Sampler(config.updated(seed=s)), logits) == Sampler(config.updated(seed=s))(logits)
                           for s in range(200))
                print(f"| {vocab_name} | {row_name} | {config_name} | {t_old:.2f} | {t_new:.2f} | {same} |")


if __name__ == "__main__":
    main()
