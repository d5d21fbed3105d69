"""Conversation templates: the checkpoint's own jinja `chat_template`, rendered as transformers
renders it, or a built-in one (llama-2, llama-3, chatml, mistral, raw).

A template turns a list of {"role", "content"} messages into prompt text; special tokens appear in
that text as strings, and the tokenizer maps them back to ids (as transformers' apply_chat_template
does, so no second BOS is added). Each template also says which token strings end a reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class Template:
    name: str
    render: Callable[[list[dict], bool, dict], str]  # (messages, add_generation_prompt, special tokens)
    stop_tokens: tuple[str, ...] = ()  # token strings that end a reply, besides the model's EOS ids
    bos_from_tokenizer: bool = False  # else the template writes BOS itself (or the model wants none)
    system_role: bool = True


def _alternating(messages: list[dict]) -> list[dict]:
    for i, m in enumerate(messages):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise ConfigError("conversation roles must alternate user/assistant/user/...")
    return messages


def _llama2(messages, add_generation_prompt, tokens):
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = _alternating(messages[1:] if system is not None else messages)
    out = []
    for i, m in enumerate(turns):
        content = m["content"]
        if i == 0 and system is not None:
            content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
        if m["role"] == "user":
            out.append(f"{tokens['bos_token']}[INST] {content.strip()} [/INST]")
        else:
            out.append(f" {content.strip()} {tokens['eos_token']}")
    return "".join(out)


def _llama3(messages, add_generation_prompt, tokens):
    out = [tokens["bos_token"]] if messages else []
    for m in messages:
        out.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>")
    if add_generation_prompt:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _chatml(messages, add_generation_prompt, tokens):
    out = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _mistral(messages, add_generation_prompt, tokens):
    out = [tokens["bos_token"]]
    for m in _alternating(messages):
        out.append(f"[INST] {m['content']} [/INST]" if m["role"] == "user" else f"{m['content']}{tokens['eos_token']}")
    return "".join(out)


def _qwen2(messages, add_generation_prompt, tokens):
    if not messages or messages[0]["role"] != "system":
        messages = [{"role": "system", "content": "You are a helpful assistant."}] + list(messages)
    return _chatml(messages, add_generation_prompt, tokens)


def _phi3(messages, add_generation_prompt, tokens):
    out = [f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages if m["role"] in ("system", "user", "assistant")]
    out.append("<|assistant|>\n" if add_generation_prompt else tokens["eos_token"])
    return "".join(out)


def _raw(messages, add_generation_prompt, tokens):
    return "".join(m["content"] for m in messages)


BUILTIN = {
    # Meta Llama-2 chat (meta-llama/Llama-2-*-chat-hf)
    "llama-2": Template("llama-2", _llama2),
    # Meta Llama-3 / 3.1 instruct, without tool calling
    "llama-3": Template("llama-3", _llama3, stop_tokens=("<|eot_id|>",)),
    # ChatML (Qwen, OpenHermes, ...): no BOS
    "chatml": Template("chatml", _chatml, stop_tokens=("<|im_end|>",)),
    # Mistral-7B-Instruct v0.2: user/assistant only
    "mistral": Template("mistral", _mistral, system_role=False),
    # Qwen2 instruct: ChatML with a default system message
    "qwen2": Template("qwen2", _qwen2, stop_tokens=("<|im_end|>",)),
    # Phi-3 instruct (mini/medium, 4k and 128k)
    "phi-3": Template("phi-3", _phi3, stop_tokens=("<|end|>",)),
    # plain completion: messages' text concatenated, BOS as the tokenizer config says
    "raw": Template("raw", _raw, bos_from_tokenizer=True),
}


def jinja_template(source: str, name: str = "tokenizer_config.json") -> Template:
    """The checkpoint's chat_template, in the environment transformers renders it in."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ConfigError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    compiled = env.from_string(source)

    def render(messages, add_generation_prompt, tokens):
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **tokens)

    return Template(name, render, stop_tokens=_stop_tokens_in(source))


def _stop_tokens_in(source: str) -> tuple[str, ...]:
    """End-of-turn markers a jinja template writes after each message."""
    return tuple(t for t in ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>") if t in source)


def checkpoint_template(model_dir: Path) -> str | None:
    """Where a checkpoint keeps its own chat template, if it has one: transformers 5 writes
    chat_template.jinja, older versions the chat_template key of tokenizer_config.json."""
    if (Path(model_dir) / "chat_template.jinja").is_file():
        return "chat_template.jinja"
    config = Path(model_dir) / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text()).get("chat_template"):
        return "tokenizer_config.json"
    return None


def get_template(name: str, model_dir: Path) -> Template:
    """A built-in template by name, or the checkpoint's own by the file that holds it."""
    model_dir = Path(model_dir)
    if name == "chat_template.jinja":
        return jinja_template((model_dir / name).read_text(), name)
    if name == "tokenizer_config.json":
        source = json.loads((model_dir / name).read_text()).get("chat_template")
        if isinstance(source, list):  # named templates: the default one
            source = next((t["template"] for t in source if t.get("name") == "default"), None)
        if not isinstance(source, str):
            raise ConfigError(f"{model_dir / name} has no default chat_template; choose a built-in template: " + ", ".join(BUILTIN))
        return jinja_template(source, name)
    if name not in BUILTIN:
        raise ConfigError(f"unknown conversation template {name!r}; choose one of: {', '.join(BUILTIN)} (or the model's own)")
    return BUILTIN[name]


@dataclass
class Conversation:
    template: Template
    system_message: str | None = None
    messages: list[dict] = field(default_factory=list)

    def all_messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.system_message}] if self.system_message and self.template.system_role else []
        return system + self.messages

    def render(self, tokens: dict, add_generation_prompt: bool = True) -> str:
        return self.template.render(self.all_messages(), add_generation_prompt, tokens)
