"""The interactive chat loop behind `mlcgen chat`: streaming replies and a few slash commands.

Works on a terminal (prompt, readline history, Ctrl-C stops the reply without quitting) and with
piped stdin (one message per line).
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields

from .errors import MlcgenError

HELP = """commands:
  /help              this text
  /reset             forget the conversation
  /stats             prefill and decode speed of the last reply
  /set key=value     change a generation option, e.g. /set temperature=0 (options: {options})
  /exit              quit (Ctrl-D too)
Ctrl-C stops the current reply."""


def _parse_value(text: str, kind):
    if text.lower() in ("none", "null"):
        return None
    if "list" in str(kind):
        return [s for s in text.split(",") if s]
    if "int" in str(kind) and "." not in text:
        return int(text)
    return float(text)


def _enable_history() -> None:
    try:
        import readline
    except ImportError:  # not on every platform; chat works without it
        return
    path = os.path.expanduser("~/.mlcgen_history")
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    import atexit

    atexit.register(lambda: _save_history(readline, path))


def _save_history(readline, path: str) -> None:
    try:
        readline.write_history_file(path)
    except OSError:
        pass


def run(chat, stdin=None, stdout=None) -> None:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    interactive = stdin.isatty()
    if interactive:
        _enable_history()
        stdout.write("Type /help for commands.\n")
    while True:
        try:
            line = input(">>> ") if interactive else stdin.readline()
        except EOFError:
            line = ""
        except KeyboardInterrupt:
            stdout.write("\n")
            continue
        if not line:  # end of input
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            if not _command(chat, line.strip(), stdout):
                break
            continue
        if not interactive:
            stdout.write(f">>> {line}\n")
        _reply(chat, line, stdout)


def _reply(chat, prompt: str, stdout) -> None:
    pieces = chat.generate(prompt, stream=True)
    try:
        for piece in pieces:
            stdout.write(piece)
            stdout.flush()
    except KeyboardInterrupt:
        pieces.close()  # records the partial reply
        stdout.write(" [stopped]")
    stdout.write("\n")
    stdout.flush()


def _command(chat, line: str, stdout) -> bool:
    """Runs a slash command; False means quit."""
    name, _, arg = line.partition(" ")
    if name in ("/exit", "/quit"):
        return False
    if name == "/help":
        stdout.write(HELP.format(options=", ".join(f.name for f in fields(chat.generation))) + "\n")
    elif name == "/reset":
        chat.reset_chat()
        stdout.write("conversation reset\n")
    elif name == "/stats":
        stdout.write(chat.stats() + "\n")
    elif name == "/set":
        key, eq, value = arg.partition("=")
        kinds = {f.name: f.type for f in fields(chat.generation)}
        try:
            if not eq or key.strip() not in kinds:
                raise MlcgenError(f"usage: /set key=value with key one of {', '.join(kinds)}")
            chat.generation = chat.generation.updated(**{key.strip(): _parse_value(value.strip(), kinds[key.strip()])})
            stdout.write(f"{key.strip()} = {getattr(chat.generation, key.strip())!r}\n")
        except (MlcgenError, ValueError) as e:
            stdout.write(f"error: {e}\n")
    else:
        stdout.write(f"unknown command {name}; /help lists them\n")
    stdout.flush()
    return True
