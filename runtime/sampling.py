"""Choosing the next token from logits: penalties, temperature, top-k, top-p, seeded.

Here in numpy: the first token of a reply (the prefill's logits are on the host) and whatever the
device does not draw. Greedy decoding and top-p sampling without top-k or penalties (the defaults)
run on the device (Engine.greedy_stream, Engine.sample_stream: compiler/sampling.py), where no
logits cross to the host; there a draw takes one uniform number from this sampler's generator,
so a seed fixes those replies too, but the device picks its token from the same nucleus by its
own rule (vocabulary order), not this module's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

import numpy as np

from ..errors import ConfigError


UNIFORMS = 256  # uniform numbers in the `sample` entry's table: the engine uploads one every UNIFORMS steps


@dataclass
class GenerationConfig:
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # CTRL-style: divides positive logits of seen tokens
    presence_penalty: float = 0.0  # subtracted once from every seen token
    frequency_penalty: float = 0.0  # subtracted per occurrence
    max_gen_len: int = 256
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings, besides the template's

    def __post_init__(self):
        checks = [
            ("temperature", self.temperature >= 0, ">= 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("top_k", self.top_k >= 0, ">= 0"),
            ("repetition_penalty", self.repetition_penalty > 0, "> 0"),
            ("max_gen_len", self.max_gen_len > 0, "> 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"GenerationConfig.{name}={getattr(self, name)!r}: expected {expected}")

    def is_plain_argmax(self) -> bool:
        """Greedy without penalties: what the models' on-device `greedy` entry computes."""
        return self.temperature == 0 and self._no_penalties()

    def samples_on_device(self) -> bool:
        """Top-p sampling without top-k or penalties: what the models' on-device `sample` entry draws."""
        return self.temperature > 0 and self.top_k == 0 and self._no_penalties()

    def _no_penalties(self) -> bool:
        return self.repetition_penalty == 1.0 and self.presence_penalty == 0 and self.frequency_penalty == 0

    def updated(self, **changes) -> "GenerationConfig":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown generation option(s) {unknown}; known: {', '.join(sorted(known))}")
        return GenerationConfig(**{**self.__dict__, **changes})


class Sampler:
    def __init__(self, config: GenerationConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.seen: Counter = Counter()  # tokens generated this reply, for the penalties

    def __call__(self, logits: np.ndarray) -> int:
        c = self.config
        row = logits.astype(np.float32, copy=True)  # float32 throughout: the row is read a few times
        if self.seen:
            ids = np.fromiter(self.seen.keys(), dtype=np.int64)
            counts = np.fromiter(self.seen.values(), dtype=np.float64)
            seen = row[ids].astype(np.float64)
            if c.repetition_penalty != 1.0:
                seen = np.where(seen > 0, seen / c.repetition_penalty, seen * c.repetition_penalty)
            row[ids] = seen - (c.presence_penalty + c.frequency_penalty * counts)
        if c.temperature == 0:
            token = int(np.argmax(row))
        else:
            row /= np.float32(c.temperature)
            token = self._draw(row)
        self.seen[token] += 1
        return token

    def device_config(self) -> np.ndarray:
        """The `sample` entry's config: 1 / temperature, top_p."""
        return np.array([1 / self.config.temperature, self.config.top_p], dtype=np.float32)

    def uniforms(self) -> np.ndarray:
        """The next UNIFORMS numbers of this sampler's generator, for the `sample` entry's table (so a
        seed fixes the device's draws too)."""
        return self.rng.random(UNIFORMS).astype(np.float32)

    def _draw(self, logits: np.ndarray) -> int:
        """A token from the top-k / top-p set of `logits` (already divided by the temperature),
        found among the highest logits only, widened until the set is complete: a full sort of a
        128K vocabulary took 11 ms a token on a 2-core machine, longer than a GPU decode step
        (benchmarks/sampler_speed.py). For top-p only the tokens whose probability reaches
        (1 - top_p) / vocabulary are searched: they hold the nucleus (a token less likely than that
        has more than top_p of the mass above it), and picking them is one pass over the row."""
        c = self.config
        pool, ids, total = logits, None, None  # the logits searched; ids: their indices, where not all
        if not c.top_k:
            top = logits.max()
            total = np.exp(logits - top).sum(dtype=np.float64)  # the row's mass, relative to its top
            if c.top_p < 1:  # 1e-3 below the bound, for float32 rounding
                ids = np.flatnonzero(logits >= top + np.log(total) - np.log(len(logits) / (1 - c.top_p)) - 1e-3)
                pool = logits[ids]
        candidates = c.top_k or 64
        while True:
            order = _highest(pool, candidates)[: c.top_k or None]
            order = order if ids is None else ids[order]
            probs = np.exp(logits[order].astype(np.float64) - logits[order[0]])
            mass = np.cumsum(probs) / (probs.sum() if c.top_k else total)
            keep = int(np.searchsorted(mass, c.top_p)) + 1  # smallest set with mass >= top_p
            if c.top_k or keep <= len(order) or len(order) == len(pool):
                break  # with top_k the first candidates hold the whole set
            # The set reaches past the candidates: look further, or sort the whole pool once the
            # candidates would be an eighth of it (a flat row's set can hold most of it)
            candidates = candidates * 8 if candidates * 64 < len(pool) else len(pool)
        keep = min(keep, len(order))  # a top-k set's rounded mass can fall short of top_p
        probs = probs[:keep] / probs[:keep].sum()
        return int(order[self.rng.choice(keep, p=probs)])


def _highest(logits: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` highest logits and any tied with the lowest of them, in the order of a
    stable descending sort of the whole row (ties by index): the prefix of that sort, in O(n)."""
    if count >= len(logits):
        return np.argsort(-logits, kind="stable")
    threshold = np.partition(logits, len(logits) - count)[len(logits) - count]
    ids = np.flatnonzero(logits >= threshold)
    return ids[np.argsort(-logits[ids], kind="stable")]


def nucleus(logits: np.ndarray, temperature: float, top_p: float) -> dict[int, float]:
    """Top-p's set by its definition (a stable sort of the whole row, in float64): the fewest most
    likely tokens whose probability reaches top_p, with their renormalized probabilities. What the
    device's sampler is checked against (tests, benchmarks/sampled_decode.py)."""
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    p = np.exp(z[order] - z[order[0]])
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), top_p)) + 1
    return dict(zip(order[:keep].tolist(), (p[:keep] / p[:keep].sum()).tolist()))
