"""The shipped demo model: its card, zero-setup chat, golden replies."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

import mlcgen
from mlcgen import demo

GREEDY = mlcgen.GenerationConfig(temperature=0, max_gen_len=100)
# What the default demo build (q4f32_1, CPU) answers greedily; a change here is a change users see.
GOLDEN = {
    "What color is a banana?": "A banana is yellow.",
    "What is 4 plus 5?": "4 plus 5 is 9.",
    "Tell me a story about a fox.": (
        "Once upon a time, there was a happy fox named Lily. Lily lived in a busy town. One day, Lily wanted to cross "
        "the river. But it started to rain. Then Lily met a little bird. \"I will help you,\" said the bird. Together they "
        "tried again, and this time it worked. They laughed and played until the sun went down."
    ),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("cache")
    monkeypatch_module.setenv("MLCGEN_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


def test_model_card_and_size():
    files = list(demo.MODEL_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20
    card = (demo.MODEL_DIR / "README.md").read_text()
    log = json.loads((demo.MODEL_DIR / "train-log.json").read_text())
    assert f"{log['parameters']:,}" in card and f"{log['held_out_perplexity']:.2f}" in card
    assert log["command"].startswith("python train.py") and "demo/train.py" in card
    config = json.loads((demo.MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and 5e6 <= log["parameters"] <= 30e6


def test_default_chat_module_builds_once_and_answers_golden(cache):
    chat = mlcgen.ChatModule(chat_config=mlcgen.ChatConfig(generation=GREEDY))
    lib = cache / "mlcgen-demo-q4f32_1-cpu" / "lib.so"
    assert lib.is_file()
    for prompt, expected in GOLDEN.items():
        chat.reset_chat()
        assert chat.generate(prompt) == expected
    built_at = lib.stat().st_mtime_ns
    mlcgen.ChatModule()  # second use: reuses the cache
    assert lib.stat().st_mtime_ns == built_at


def test_unquantized_demo_matches_transformers(tmp_path):
    from mlcgen.compiler.build import build

    out = build(demo.MODEL_DIR, "q0f32", "cpu", output=tmp_path / "demo-q0f32", log=None)
    chat = mlcgen.ChatModule(out, chat_config=mlcgen.ChatConfig(generation=GREEDY))
    tok = AutoTokenizer.from_pretrained(demo.MODEL_DIR)
    model = LlamaForCausalLM.from_pretrained(demo.MODEL_DIR, dtype=torch.float32).eval()
    for prompt in GOLDEN:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=False)
        with torch.no_grad():
            ref = model.generate(ids, max_new_tokens=100, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        chat.reset_chat()
        assert chat.generate(prompt) == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)


def test_mlcgen_chat_without_a_model_gets_english_replies(cache):
    script = "/set temperature=0\nHello!\nWhat color is a banana?\nWhat is 4 plus 5?\nWho are you?\nWhat is the capital of France?\n"
    out = subprocess.run([sys.executable, "-c", "from mlcgen.cli import main; main()", "chat"], input=script,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert "Hello! How can I help you today?" in out.stdout
    assert "A banana is yellow." in out.stdout
    assert "4 plus 5 is 9." in out.stdout
    assert "I am the mlcgen demo model" in out.stdout or "I am a small demo model" in out.stdout
    assert "I do not know about that" in out.stdout
