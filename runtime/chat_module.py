"""ChatModule: multi-turn chat over a built model folder, in the style MLC-LLM users know.

Context-window policy (never a crash):
- a reply stops when the KV cache is full (finish reason "length");
- before a turn, if the prompt would leave less than min(max_gen_len, window/4) tokens for the
  reply, the oldest user/assistant exchanges are dropped (the system message stays) and the cache
  is rebuilt from what is kept; if the newest message alone is still too long, its beginning is
  cut (BOS kept). `stats()` reports how many exchanges were dropped and whether a message was cut.
Each turn re-renders the whole conversation and prefills only what differs from the KV cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import dist
from .conversation import Conversation, get_template
from .engine import Engine
from .sampling import GenerationConfig, Sampler
from .tokenizer import StreamingDetokenizer, Tokenizer


@dataclass
class ChatConfig:
    conv_template: str | None = None  # None: what the build chose (the checkpoint's own, else raw)
    system_message: str | None = None
    generation: GenerationConfig | None = None  # None: defaults from the checkpoint's generation_config


@dataclass
class TurnStats:
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    finish_reason: str = ""
    dropped_exchanges: int = 0  # history dropped to fit the context window (whole conversation)
    truncated_prompt: bool = False

    def rate(self, tokens: int, seconds: float) -> float:
        return tokens / seconds if seconds > 0 else 0.0


class ChatModule:
    def __init__(self, model=None, device: str = "auto", chat_config: ChatConfig | None = None):
        """model: a folder made by `mlcgen build`; None for the shipped demo model (compiled for
        the CPU on first use)."""
        if model is None:
            from ..demo import demo_dist

            model = demo_dist()
        self.dist_dir = Path(model)
        self.engine = Engine(self.dist_dir, device)
        self.tokenizer = Tokenizer(self.dist_dir)
        path = self.dist_dir / dist.CHAT_CONFIG
        self.defaults = json.loads(path.read_text()) if path.is_file() else {}
        self._configure(chat_config or ChatConfig())
        self.last = TurnStats()
        self.dropped_exchanges = 0

    def _configure(self, chat_config: ChatConfig) -> None:
        self.chat_config = chat_config
        template = get_template(chat_config.conv_template or self.defaults.get("conversation_template", "raw"), self.dist_dir)
        self.conversation = Conversation(template, chat_config.system_message)
        self.generation = chat_config.generation or GenerationConfig(
            temperature=self.defaults.get("temperature", 0.7), top_p=self.defaults.get("top_p", 0.95)
        )
        self.special_tokens = {"bos_token": self.tokenizer.bos_token or "", "eos_token": self.tokenizer.eos_token or ""}
        stop = set(self.defaults.get("eos_token_ids", [])) | {self.tokenizer.token_to_id(self.tokenizer.eos_token)}
        stop |= {self.tokenizer.token_to_id(t) for t in template.stop_tokens}
        self.stop_ids = {i for i in stop if i is not None}
        self.cached: list[int] = []  # token ids in the KV cache, in order

    # Public API ---------------------------------------------------------------------------------
    def generate(self, prompt: str, generation_config: GenerationConfig | None = None,
                 progress_callback: Callable[[str], None] | None = None, stream: bool = False):
        """The reply to `prompt` as a string; with stream=True an iterator of text pieces instead;
        progress_callback, if given, is called with each piece as it is produced."""
        pieces = self._turn(prompt, generation_config or self.generation)
        if stream:
            return pieces
        reply = []
        for piece in pieces:
            reply.append(piece)
            if progress_callback:
                progress_callback(piece)
        return "".join(reply)

    def reset_chat(self, chat_config: ChatConfig | None = None) -> None:
        self.engine.reset()
        self._configure(chat_config or self.chat_config)
        self.dropped_exchanges = 0

    def stats(self, verbose: bool = False):
        s = self.last
        if verbose:
            return {**s.__dict__, "prefill_tok_s": s.rate(s.prefill_tokens, s.prefill_seconds),
                    "decode_tok_s": s.rate(s.decode_tokens, s.decode_seconds)}
        return f"prefill: {s.rate(s.prefill_tokens, s.prefill_seconds):.1f} tok/s, decode: {s.rate(s.decode_tokens, s.decode_seconds):.1f} tok/s"

    def benchmark_generate(self, prompt: str, generate_length: int) -> str:
        """Generate exactly `generate_length` tokens (stop tokens ignored), then see stats()."""
        config = self.generation.updated(max_gen_len=generate_length, stop=[])
        return "".join(self._turn(prompt, config, ignore_stop=True))

    # One turn -----------------------------------------------------------------------------------
    def _turn(self, prompt: str, config: GenerationConfig, ignore_stop: bool = False) -> Iterator[str]:
        self.conversation.messages.append({"role": "user", "content": prompt})
        self.last = stats = TurnStats()
        ids = self._fit_prompt(config, stats)
        start = time.perf_counter()
        logits = self._sync_cache(ids, stats)
        stats.prefill_seconds = time.perf_counter() - start
        sampler, detok = Sampler(config), StreamingDetokenizer(self.tokenizer)
        held = StopStrings(config.stop)
        reply: list[str] = []
        stats.finish_reason = "length"
        start = time.perf_counter()
        stopped_by_string = False
        # Plain argmax and top-p sampling run on the device (Engine.greedy_stream, sample_stream):
        # no logits cross to the host, and the host issues each step ahead of the last one's token.
        on_device = (config.is_plain_argmax() and self.engine.has_entry("greedy")) or \
            (config.samples_on_device() and self.engine.samples_on_device)
        stream = None
        token = sampler(logits)
        try:
            for step in range(config.max_gen_len):
                if token in self.stop_ids and not ignore_stop:
                    stats.finish_reason = "stop"
                    break
                piece, stopped_by_string = held.feed(detok.put(token))
                if piece:
                    reply.append(piece)
                    yield piece
                if stopped_by_string:
                    stats.finish_reason = "stop"
                    break
                if step + 1 == config.max_gen_len or len(self.cached) >= self.engine.context_window:
                    break
                if on_device:
                    stream = stream or self._device_stream(token, config, sampler)
                    next_token = next(stream)
                else:
                    next_token = sampler(self.engine.decode(token))
                self.cached.append(token)  # what the cache holds, also with the stream's step ahead
                stats.decode_tokens += 1
                token = next_token
            if not stopped_by_string:
                piece = held.feed(detok.flush())[0] + held.flush()
                if piece:
                    reply.append(piece)
                    yield piece
        finally:  # also when the caller stops early (Ctrl-C): keep what was said
            if stream:
                stream.close()  # pops the step it issued ahead
            stats.decode_seconds = time.perf_counter() - start
            stats.dropped_exchanges = self.dropped_exchanges
            self.conversation.messages.append({"role": "assistant", "content": "".join(reply)})

    def _device_stream(self, token: int, config: GenerationConfig, sampler: Sampler):
        if config.is_plain_argmax():
            return self.engine.greedy_stream(token, config.max_gen_len - 1)
        return self.engine.sample_stream(token, sampler, config.max_gen_len - 1)

    def _render_ids(self) -> list[int]:
        text = self.conversation.render(self.special_tokens, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_bos=self.conversation.template.bos_from_tokenizer and self.tokenizer.add_bos)

    def _fit_prompt(self, config: GenerationConfig, stats: TurnStats) -> list[int]:
        window = self.engine.context_window
        limit = window - min(config.max_gen_len, window // 4)
        ids = self._render_ids()
        messages = self.conversation.messages
        while len(ids) > limit and len(messages) > 1:
            del messages[:2]  # the oldest user message and its reply
            self.dropped_exchanges += 1
            ids = self._render_ids()
        if len(ids) > limit:
            stats.truncated_prompt = True
            bos = ids[:1] if ids and ids[0] == self.tokenizer.bos_id else []
            ids = bos + ids[len(ids) - (limit - len(bos)) :]
        return ids

    def _sync_cache(self, ids: list[int], stats: TurnStats):
        """Make the KV cache hold `ids`, reusing the longest common prefix; logits of the last."""
        common = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token must run to produce logits
        self.engine.pop(len(self.cached) - common)
        logits = self.engine.prefill(ids[common:])
        stats.prefill_tokens = len(ids) - common
        self.cached = list(ids)
        return logits


@dataclass
class StopStrings:
    """Holds back text that might be the start of a stop string; cuts at the first one."""

    stops: list[str]
    pending: str = field(default="")

    def feed(self, text: str) -> tuple[str, bool]:
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s and s in self.pending]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
