"""Tokenizers as the checkpoint defines them, and streaming detokenization.

`tokenizer.json` goes through HF `tokenizers` (preferred); otherwise `tokenizer.model` through
sentencepiece. Special tokens (BOS/EOS and added tokens) come from tokenizer_config.json.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import ParamsError

REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


def _token_text(value) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


class Tokenizer:
    def __init__(self, model_dir):
        model_dir = Path(model_dir)
        config_path = model_dir / "tokenizer_config.json"
        self.config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        if (model_dir / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as HFTokenizer

            self._hf = HFTokenizer.from_file(str(model_dir / "tokenizer.json"))
            self._sp = None
        elif (model_dir / "tokenizer.model").is_file():
            import sentencepiece

            self._hf = None
            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
        else:
            raise ParamsError(f"{model_dir}: no tokenizer.json or tokenizer.model; rebuild from a checkpoint that has one")
        self.bos_token = _token_text(self.config.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token"))
        self.add_bos = bool(self.config.get("add_bos_token", self._sp is not None))
        if self._hf:
            self.special_ids = {i for i, t in self._hf.get_added_tokens_decoder().items() if t.special}
        else:
            added = self.config.get("added_tokens_decoder", {})
            self.special_ids = {int(i) for i, t in added.items() if t.get("special")}
        self.special_ids |= {i for i in (self.token_to_id(self.bos_token), self.token_to_id(self.eos_token)) if i is not None}
        if self._sp is not None:
            names = sorted({self.id_to_token(i) for i in self.special_ids}, key=len, reverse=True)
            self._special_split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size() if self._hf else self._sp.get_piece_size()

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token)

    def token_to_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        if self._hf:
            return self._hf.token_to_id(token)
        i = self._sp.piece_to_id(token)
        return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i

    def id_to_token(self, i: int) -> str:
        return self._hf.id_to_token(i) if self._hf else self._sp.id_to_piece(i)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Special-token strings inside `text` (as chat templates write them) become their ids."""
        if self._hf:
            ids = self._hf.encode(text, add_special_tokens=False).ids
        else:
            ids = []
            for piece in self._special_split.split(text) if self._special_split else [text]:
                special = self.token_to_id(piece) if piece else None
                if special in self.special_ids:
                    ids.append(special)
                elif piece:
                    ids += self._sp.encode(piece)
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids if not (skip_special_tokens and int(i) in self.special_ids)]
        return self._hf.decode(ids, skip_special_tokens=False) if self._hf else self._sp.decode(ids)


class StreamingDetokenizer:
    """Token ids in, text out, never a broken UTF-8 character and never a lost one.

    Text of new tokens is the decode of (a few already emitted tokens + the new ones) minus the
    decode of those few: decoders that look at neighbours (SentencePiece's leading space) stay
    right. While the decode ends in U+FFFD, a multi-byte character is still arriving: wait. The few
    kept tokens start on a character boundary, since byte-fallback decoders turn a whole run of
    byte tokens into U+FFFDs when it starts mid-character.
    """

    CONTEXT = 4

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.context: list[int] = []
        self.pending: list[int] = []

    def put(self, token_id: int) -> str:
        self.pending.append(int(token_id))
        return self._emit(final=False)

    def flush(self) -> str:
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        before = self.tokenizer.decode(self.context)
        after = self.tokenizer.decode(self.context + self.pending)
        if not final and (after.endswith(REPLACEMENT) or not after.startswith(before)):
            return ""
        emitted, self.pending = self.context + self.pending, []
        self.context = []
        for n in range(min(self.CONTEXT, len(emitted)), 0, -1):
            if REPLACEMENT not in self.tokenizer.decode(emitted[-n:]):
                self.context = emitted[-n:]
                break
        return after[len(os.path.commonprefix([before, after])) :]
