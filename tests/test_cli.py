"""`mlcgen chat` and `mlcgen bench` as a user runs them: piped stdin, a pty, JSON output; and
process memory over many chat turns."""

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from mlcgen.runtime.chat_module import ChatConfig, ChatModule
from mlcgen.runtime.sampling import GenerationConfig

MLCGEN = [sys.executable, "-c", "from mlcgen.cli import main; main()"]


def test_python_dash_m_runs_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlcgen", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mlcgen ") and "chat" in result.stdout and "build" in result.stdout


@pytest.fixture(scope="module")
def chat_dist(builds):
    return builds.dist("chat-llama-2", "q0f32")


def test_chat_with_piped_stdin(chat_dist):
    script = "\n".join([
        "Hello there, how are you?",
        "/stats",
        "/set temperature=0",
        "/set max_gen_len=8",
        "/set bogus=1",
        "/help",
        "/reset",
        "What is your name?",
        "/exit",
        "never read",
    ]) + "\n"
    out = subprocess.run([*MLCGEN, "chat", str(chat_dist)], input=script, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert ">>> Hello there, how are you?" in text
    assert "prefill:" in text and "tok/s" in text
    assert "temperature = 0.0" in text and "max_gen_len = 8" in text
    assert "error: usage: /set key=value with key one of" in text
    assert "/reset" in text and "conversation reset" in text
    assert ">>> What is your name?" in text
    assert "never read" not in text
    assert "Traceback" not in out.stderr


def test_chat_on_a_terminal(chat_dist):
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a pty
        os.execv(sys.executable, [*MLCGEN, "chat", str(chat_dist)])
    output = b""

    def read_until(done, timeout: float = 120) -> bytes:
        nonlocal output
        deadline = time.time() + timeout
        while not done(output) and time.time() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    break
        return output

    prompts = lambda n: (lambda out: out.count(b">>> ") >= n)
    assert b"Type /help" in read_until(prompts(1))
    os.write(fd, b"/set temperature=0\n")
    assert b"temperature = 0.0" in read_until(prompts(2))
    mark = len(output)
    os.write(fd, b"Hello there, how are you?\n")
    reply = read_until(prompts(3))[mark:]
    assert reply.count(b">>> ") == 1, "the reply ended with a new prompt"
    assert len(reply.replace(b"\r", b"").strip()) > len(b"Hello there, how are you?") + 10
    os.write(fd, b"/exit\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_bench_json_with_random_weights_and_no_params(tmp_path, chat_dist):
    shipped = tmp_path / "libonly"
    shipped.mkdir()
    for name in ("lib.so", "manifest.json"):
        shutil.copy(chat_dist / name, shipped / name)
    out = subprocess.run([*MLCGEN, "bench", str(shipped), "--prompt-len", "16", "--gen-len", "8", "--repeat", "2",
                          "--random-weights", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["prompt_len"] == 16 and result["gen_len"] == 8 and result["random_weights"] is True
    assert result["prefill_entry"] == "prefill"  # a CPU build: no vendor-library entry
    assert result["prefill_tok_s"] > 0 and result["decode_tok_s"] > 0
    assert result["decode"] == "greedy"
    print(f"bench (tiny model, CPU): pp16 {result['prefill_tok_s']:.0f} tok/s, tg8 {result['decode_tok_s']:.0f} tok/s")
    sampled = subprocess.run([*MLCGEN, "bench", str(shipped), "--prompt-len", "16", "--gen-len", "8", "--repeat", "1",
                              "--random-weights", "--sample"], capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0, sampled.stderr
    assert re.search(r"tg8: [0-9.]+ ± [0-9.]+ tok/s \(sampled on the host\)", sampled.stdout), sampled.stdout
    missing = subprocess.run([*MLCGEN, "bench", str(shipped)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "tensor-cache.json: missing" in missing.stderr


def test_no_memory_growth_over_200_turns(chat_dist):
    chat = ChatModule(chat_dist, chat_config=ChatConfig(generation=GenerationConfig(temperature=0, max_gen_len=8)))
    process = psutil.Process()

    def turns(n):
        for i in range(n):
            chat.generate(f"Hello there, turn {i}")
            if i % 4 == 3:
                chat.reset_chat()

    turns(20)  # warm up: first-call allocations, caches
    before = process.memory_info().rss
    turns(200)
    growth = (process.memory_info().rss - before) / 2**20
    print(f"RSS growth over 200 chat turns: {growth:+.1f} MiB (from {before / 2**20:.0f} MiB)")
    assert growth < 16


class InterruptingOutput:
    """A terminal whose user presses Ctrl-C while the third piece of a reply is printed."""

    def __init__(self):
        self.text, self.pieces = "", 0

    def write(self, s):
        if not s.startswith((">>>", "\n", " [stopped]")):
            self.pieces += 1
            if self.pieces == 3:
                raise KeyboardInterrupt
        self.text += s

    def flush(self):
        pass


def test_ctrl_c_stops_the_reply_but_not_the_chat(chat_dist):
    import io

    from mlcgen import chat as chat_loop

    chat = ChatModule(chat_dist, chat_config=ChatConfig(generation=GenerationConfig(temperature=0, max_gen_len=24)))
    out = InterruptingOutput()
    chat_loop.run(chat, stdin=io.StringIO("Hello there, how are you?\n/stats\n"), stdout=out)
    assert " [stopped]" in out.text and "prefill:" in out.text  # the loop went on to the next command
    partial = chat.conversation.messages[-1]
    assert partial["role"] == "assistant" and 0 < len(partial["content"])
    full = ChatModule(chat_dist, chat_config=ChatConfig(generation=GenerationConfig(temperature=0, max_gen_len=24)))
    assert full.generate("Hello there, how are you?").startswith(partial["content"])
    assert len(partial["content"]) < len(full.conversation.messages[-1]["content"])
