"""The chat runtime: tokenizers, streaming, templates, sampling, ChatModule and the context policy."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from conftest import hf_model
from mlcgen.errors import ConfigError, ParamsError
from mlcgen.runtime.chat_module import ChatConfig, ChatModule, StopStrings
from mlcgen.runtime.conversation import BUILTIN, jinja_template
from mlcgen.runtime.sampling import GenerationConfig, Sampler
from mlcgen.runtime.tokenizer import StreamingDetokenizer, Tokenizer
from tokenizers_for_tests import CHAT_TEMPLATES, bpe_tokenizer, bytelevel_tokenizer, sentencepiece_model

GREEDY = GenerationConfig(temperature=0, max_gen_len=24)
TEXTS = ["Hello there 世界 🎉 naïve café", "🎉🎉 日本語のテキスト, and ASCII again 👩‍👩‍👧"]


@pytest.fixture(scope="module")
def chat_dist(builds):
    return builds.dist("chat-llama-2", "q0f32")


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    bpe_tokenizer().save_pretrained(root / "bpe")
    sentencepiece_model(root / "spm")
    bytelevel_tokenizer(root / "bytelevel")
    return {"bpe": root / "bpe", "spm": root / "spm", "bytelevel": root / "bytelevel"}


@pytest.mark.parametrize("backend", ["bpe", "spm", "bytelevel"])
@pytest.mark.parametrize("text", TEXTS)
def test_streaming_detokenizer_never_breaks_utf8(tokenizer_dirs, backend, text):
    tok = Tokenizer(tokenizer_dirs[backend])
    ids = tok.encode(text)
    if backend == "bytelevel":  # characters split over tokens: some token alone is not valid UTF-8
        assert any("\ufffd" in tok.decode([i]) for i in ids)
    else:
        assert any(tok.id_to_token(i).startswith("<0x") for i in ids), "the text must exercise byte fallback"
    stream = StreamingDetokenizer(tok)
    chunks = [stream.put(i) for i in ids] + [stream.flush()]
    for chunk in chunks:
        assert "\ufffd" not in chunk
        chunk.encode("utf-8")  # valid UTF-8 (no lone surrogates)
    assert "".join(chunks) == tok.decode(ids)
    assert tok.decode(ids).strip() == text.strip()


def test_bpe_tokenizer_matches_transformers_with_special_tokens(tokenizer_dirs):
    ours, theirs = Tokenizer(tokenizer_dirs["bpe"]), AutoTokenizer.from_pretrained(tokenizer_dirs["bpe"])
    text = "<s>[INST] Hello there [/INST] Fine </s>"
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert ours.encode(text)[0] == ours.bos_id
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text, add_special_tokens=False), skip_special_tokens=True)


def test_sentencepiece_special_tokens_and_bos(tokenizer_dirs):
    tok = Tokenizer(tokenizer_dirs["spm"])
    ids = tok.encode("<s>hello</s>")
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) > 2
    assert tok.encode("hello", add_bos=True)[0] == 1
    assert tok.decode(ids) == "hello"


CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": " Hello. "}, {"role": "user", "content": "How are you?\n"}],
    [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"},
     {"role": "assistant", "content": "four"}],
]


@pytest.mark.parametrize("family", list(CHAT_TEMPLATES))
@pytest.mark.parametrize("turns", range(len(CONVERSATIONS)))
def test_templates_render_as_transformers(family, turns):
    messages = CONVERSATIONS[turns]
    if family == "mistral":
        messages = [m for m in messages if m["role"] != "system"]
    tok = bpe_tokenizer(family=family)
    tokens = {"bos_token": tok.bos_token, "eos_token": tok.eos_token}
    for add_generation_prompt in (True, False):
        expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert BUILTIN[family].render(messages, add_generation_prompt, tokens) == expected
        assert jinja_template(CHAT_TEMPLATES[family]).render(messages, add_generation_prompt, tokens) == expected


def test_template_errors_are_clear():
    with pytest.raises(ConfigError, match="roles must alternate"):
        BUILTIN["llama-2"].render([{"role": "assistant", "content": "x"}], True, {"bos_token": "<s>", "eos_token": "</s>"})
    with pytest.raises(ConfigError, match="chat template: Conversation roles must alternate"):
        jinja_template(CHAT_TEMPLATES["mistral"]).render([{"role": "assistant", "content": "x"}], True, {"bos_token": "", "eos_token": ""})


def reference_reply(model_dir, messages, max_new_tokens):
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        out = hf_model(model_dir).generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                           eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, len(ids):], skip_special_tokens=True)


def test_chat_module_greedy_reply_matches_transformers(builds, chat_dist):
    chat = ChatModule(chat_dist, chat_config=ChatConfig(generation=GREEDY))
    assert chat.conversation.template.name == "chat_template.jinja"  # the checkpoint's own
    first = chat.generate("Hello there, how are you?")
    assert len(first) > 10
    assert first == reference_reply(builds.checkpoint("chat-llama-2"), [{"role": "user", "content": "Hello there, how are you?"}], 24)
    second = chat.generate("What is your name?")
    history = [{"role": "user", "content": "Hello there, how are you?"}, {"role": "assistant", "content": first},
               {"role": "user", "content": "What is your name?"}]
    assert second == reference_reply(builds.checkpoint("chat-llama-2"), history, 24)
    stats = chat.stats(verbose=True)
    assert stats["prefill_tokens"] < len(chat.cached), "the second turn reuses the cached prefix"
    assert stats["decode_tok_s"] > 0 and "decode:" in chat.stats()


def test_streaming_and_callback_give_the_same_text(chat_dist):
    chat = ChatModule(chat_dist, chat_config=ChatConfig(generation=GREEDY))
    pieces = list(chat.generate("Hello there, how are you?", stream=True))
    chat.reset_chat()
    seen = []
    text = chat.generate("Hello there, how are you?", progress_callback=seen.append)
    assert "".join(pieces) == text == "".join(seen) and len(pieces) > 1


def test_sampling_is_seeded_and_respects_its_options():
    logits = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    draw = lambda **kw: [Sampler(GenerationConfig(**kw))(logits) for _ in range(5)]
    assert draw(temperature=1.0, seed=7) == draw(temperature=1.0, seed=7)
    assert len({Sampler(GenerationConfig(temperature=5.0, top_p=1.0, seed=s))(logits) for s in range(20)}) > 5
    assert set(draw(temperature=1.0, top_k=1, seed=1)) == {int(logits.argmax())}
    assert set(draw(temperature=1.0, top_p=1e-6, seed=1)) == {int(logits.argmax())}
    top3 = set(np.argsort(-logits)[:3].tolist())
    assert {Sampler(GenerationConfig(temperature=3.0, top_k=3, seed=s))(logits) for s in range(30)} <= top3
    sampler = Sampler(GenerationConfig(temperature=0, presence_penalty=100.0))
    assert len({sampler(logits) for _ in range(4)}) == 4, "presence penalty forbids repeats here"
    sampler = Sampler(GenerationConfig(temperature=0, repetition_penalty=1e6))
    assert len({sampler(np.abs(logits)) for _ in range(4)}) == 4


def full_sort_draw(config: GenerationConfig, logits: np.ndarray) -> int:
    """Top-k / top-p sampling by a stable sort of the whole row: what Sampler computes faster."""
    rng, logits = np.random.default_rng(config.seed), logits.astype(np.float64) / config.temperature
    order = np.argsort(-logits, kind="stable")[: config.top_k or None]
    probs = np.exp(logits[order] - logits[order[0]])
    keep = min(int(np.searchsorted(np.cumsum(probs / probs.sum()), config.top_p)) + 1, len(order))
    return int(order[rng.choice(keep, p=probs[:keep] / probs[:keep].sum())])


@pytest.mark.parametrize("options", [{}, {"temperature": 1.5, "top_p": 0.99}, {"top_k": 40, "top_p": 1.0}, {"top_k": 3000, "top_p": 0.9}],
                         ids=["default", "wide-nucleus", "top-k", "top-k-and-p"])
def test_sampler_draws_what_a_full_sort_draws(options):
    """The nucleus is found among the highest logits, widened until complete (a flat row's reaches
    a full sort): the same tokens as sorting the whole row, ties included."""
    rng = np.random.default_rng(1)
    flat = rng.standard_normal(5000).astype(np.float32)
    peaked = flat.copy()
    peaked[rng.choice(5000, 10, replace=False)] += 9.0
    tied = np.round(flat * 2) / 2  # many equal logits: ties must keep index order
    for logits in (flat, peaked, tied):
        for seed in range(20):
            config = GenerationConfig(seed=seed, **options)
            assert Sampler(config)(logits) == full_sort_draw(config, logits)


def test_top_p_keeps_a_nucleus_whose_last_token_is_near_the_search_bound():
    """Top-p searches only tokens with probability >= (1 - top_p) / vocabulary. A head token just
    short of top_p and an even tail put the nucleus's second token 5% above that bound (the
    closest an even tail gets: vocabulary / (vocabulary - 1)); every draw must be what a full sort
    draws, the tail's first token among them."""
    vocab, top_p = 20, 0.9
    probs = np.full(vocab, (1 - top_p + 1e-6) / (vocab - 1))
    probs[0] = top_p - 1e-6
    logits = np.log(probs).astype(np.float32)
    assert 1 < probs[1] / ((1 - top_p) / vocab) < 1.06
    tokens = []
    for seed in range(1000):
        config = GenerationConfig(temperature=1.0, top_p=top_p, seed=seed)
        tokens.append(Sampler(config)(logits))
        assert tokens[-1] == full_sort_draw(config, logits)
    assert set(tokens) == {0, 1}


@pytest.mark.parametrize("bad", [{"temperature": -1}, {"top_p": 0}, {"top_k": -2}, {"max_gen_len": 0}])
def test_generation_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError, match=f"GenerationConfig.{next(iter(bad))}="):
        GenerationConfig(**bad)


def test_stop_strings_cut_and_hold_back():
    stops = StopStrings(["STOP", "\nUser:"])
    assert stops.feed("Hello ST") == ("Hello ", False)
    assert stops.feed("ART and \nUs") == ("START and ", False)
    assert stops.feed("er: hi") == ("", True)
    stops = StopStrings(["STOP"])
    assert stops.feed("abcSTO") == ("abc", False) and stops.flush() == "STO"


def test_stop_string_ends_the_reply(chat_dist):
    chat = ChatModule(chat_dist, chat_config=ChatConfig(generation=GREEDY))
    full = chat.generate("Hello there, how are you?")
    cut = full[len(full) // 2 : len(full) // 2 + 3]
    chat.reset_chat()
    short = chat.generate("Hello there, how are you?", GREEDY.updated(stop=[cut]))
    assert short == full[: full.index(cut)] and chat.stats(verbose=True)["finish_reason"] == "stop"


def test_conversation_longer_than_the_window_never_crashes(builds):
    dist = builds.dist("chat-llama-2", "q0f32", context_window=96, prefill_chunk=32)
    chat = ChatModule(dist, chat_config=ChatConfig(generation=GenerationConfig(temperature=0, max_gen_len=40)))
    for turn in range(8):
        reply = chat.generate(f"Turn {turn}: tell me about the lazy dog and the quick brown fox.")
        assert isinstance(reply, str)
        assert chat.engine.length <= 96
    stats = chat.stats(verbose=True)
    assert stats["dropped_exchanges"] > 0
    assert chat.conversation.messages[0]["content"].startswith("Turn")  # history still alternates
    chat.reset_chat()
    chat.generate("word " * 300)  # one message longer than the window
    assert chat.stats(verbose=True)["truncated_prompt"] and chat.engine.length <= 96


def test_greedy_on_the_device_replies_and_caches_as_host_argmax(builds, monkeypatch):
    """Greedy chat takes the argmax on the device (Engine.greedy_stream, a step ahead); the host
    argmax path (forced here) gives the same replies, and after every turn the KV cache holds
    exactly what the chat records: replies cut by the full cache, by a stop string while the
    device runs a step ahead, by max_gen_len, and one the caller abandons mid-stream."""
    dist = builds.dist("chat-llama-2", "q0f32", context_window=96, prefill_chunk=32)

    def replies(device: bool) -> list:
        chat = ChatModule(dist, chat_config=ChatConfig(generation=GenerationConfig(temperature=0, max_gen_len=40)))
        if not device:
            monkeypatch.setattr(chat.engine, "has_entry", lambda name: False)
        out = []

        def turn(prompt, config=None, pieces=None):
            if pieces is None:
                out.append((chat.generate(prompt, config), chat.last.finish_reason, chat.last.decode_tokens))
            else:
                stream = chat.generate(prompt, config, stream=True)
                out.append([next(stream) for _ in range(pieces)])
                stream.close()  # as Ctrl-C does
            assert chat.engine.length == len(chat.cached)

        for i in range(3):  # the window fills: a reply ends at the cache's end
            turn(f"Turn {i}: tell me about the lazy dog.")
        chat.reset_chat()
        turn("Tell me about the lazy dog.")
        chat.reset_chat()  # the same reply again, cut by a stop string from its middle
        turn("Tell me about the lazy dog.", GREEDY.updated(max_gen_len=40, stop=[out[-1][0][12:15]]))
        turn("And the fox?", GREEDY.updated(max_gen_len=5))
        turn("And the cat?", pieces=6)
        return out

    device, host = replies(True), replies(False)
    assert device == host
    reasons = [r[1:] for r in device[:6]]
    assert ("length", 27) in reasons[:3] and reasons[3] == ("length", 39)  # 27 < 39: the full cache cut it
    assert reasons[4][0] == "stop" and 0 < reasons[4][1] < 39 and reasons[5] == ("length", 4)


@pytest.mark.parametrize("window", [None, 256])
def test_kv_cache_tables_follow_the_sequence_and_its_window(window):
    """The tables each forward hands the attention kernels (TVM's paged layout over identity
    pages, runtime/kv_cache.py): a decode's page table over the rows it attends to (a sliding
    window skips rows of its first page), a prefill's over the rows cached before it; rows in the
    last page; the new tokens' positions."""
    import tvm

    from mlcgen.runtime.kv_cache import KVCache

    config = {"num_hidden_layers": 2, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": window}
    manifest = {"model": {"config": config}, "page_size": 64, "context_window": 512, "prefill_chunk": 32, "model_dtype": "float16"}
    cache = KVCache(manifest, tvm.cpu())
    assert len(cache.pages) == 2 and tuple(cache.pages[0].shape) == (8, 2, 2, 64, 8)
    read = lambda args: [a.numpy().reshape(-1).tolist() for a in args[1:]]
    page_indptr, page_values, length_info, _, q_indptr, positions = read(cache.forward_args(130, 10))
    assert positions == list(range(130, 140)) and q_indptr == [0, 10] and page_values == [0, 1, 2]
    assert page_indptr == [0, 3] and length_info == [2]  # the 130 rows before: 3 pages, 2 in the last
    assert read(cache.forward_args(0, 10))[:3] == [[0, 0], [0], [0]]  # nothing before a first prefill
    page_indptr, page_values, length_info, _, _, positions = read(cache.forward_args(400, 1))
    assert positions == [400] and page_values == list(range(7))
    if window is None:
        assert page_indptr == [0, 7] and length_info == [17]
    else:  # keys 145..400: from row 17 of page 2, 17 rows in the last page
        assert page_indptr == [2, 7] and length_info == [17, 17, 0]


def test_benchmark_generate_ignores_stop_tokens(chat_dist):
    chat = ChatModule(chat_dist, chat_config=ChatConfig(generation=GREEDY))
    chat.benchmark_generate("Hello", 40)
    stats = chat.stats(verbose=True)
    assert stats["decode_tokens"] == 39 and stats["finish_reason"] == "length"


def test_device_mismatch_is_clear(chat_dist):
    with pytest.raises(ParamsError, match="cannot run on device 'vulkan'"):
        ChatModule(chat_dist, device="vulkan")
    with pytest.raises(ParamsError, match="unknown device 'tpu'; choose one of: auto, cpu, cuda, rocm, vulkan"):
        ChatModule(chat_dist, device="tpu")
