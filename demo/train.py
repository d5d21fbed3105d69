"""Train the demo model: procedural corpus -> BPE tokenizer -> small Llama -> a Hugging Face folder.

The shipped model (demo/mlcgen-demo) was made on the GPU machine with:
    python demo/train.py --out $OUT/mlcgen-demo --minutes 8
A quick check that the script runs, on a CPU:
    python demo/train.py --out /tmp/demo-smoke --minutes 0.2 --device cpu --dialogues 3000 --hidden 64 --layers 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from corpus import dialogues  # noqa: E402

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                 "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def train_tokenizer(texts: list[str], vocab_size: int):
    """Llama-style BPE: metaspace, byte fallback (any input encodes), chat markers as specials."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    draft = Tokenizer(models.BPE(unk_token="<unk>"))
    draft.normalizer = normalizer
    draft.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=SPECIALS,
                                                         limit_alphabet=100, show_progress=False))
    trained = json.loads(draft.to_str())["model"]
    vocab = dict(trained["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizer
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>",
                                   additional_special_tokens=["</s>", "<|im_start|>"], chat_template=CHAT_TEMPLATE)


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([t for seq in ids for t in seq], dtype=torch.long)


@torch.no_grad()
def held_out_loss(model, stream: torch.Tensor, seq: int, device: str) -> float:
    model.eval()
    n = (len(stream) - 1) // seq
    x = stream[: n * seq + 1]
    total, count = 0.0, 0
    for start in range(0, n, 64):
        idx = torch.arange(start, min(start + 64, n)) * seq
        batch = torch.stack([x[i : i + seq + 1] for i in idx]).to(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(batch[:, :-1]).logits.float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum").item()
        count += batch[:, 1:].numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dialogues", type=int, default=600_000)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    start = time.time()

    texts = list(dialogues(seed=0, count=args.dialogues))
    held = list(dialogues(seed=1, count=2000))  # another seed: dialogues the model has not seen verbatim
    tokenizer = train_tokenizer(texts[:50_000], args.vocab)
    train_ids, held_ids = token_stream(tokenizer, texts), token_stream(tokenizer, held)
    print(f"corpus: {len(texts)} dialogues, {len(train_ids) / 1e6:.1f}M tokens; held-out {len(held_ids) / 1e3:.0f}k tokens; "
          f"{time.time() - start:.0f} s", flush=True)

    from transformers import LlamaConfig, LlamaForCausalLM

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32,
                         num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=1024,
                         tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=im_end, architectures=["LlamaForCausalLM"])
    model = LlamaForCausalLM(config).to(args.device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    budget, warmup, step, losses = args.minutes * 60, 200, 0, []
    stream = train_ids.to(args.device)
    window = torch.arange(args.seq + 1, device=args.device)
    train_start = time.time()
    while (elapsed := time.time() - train_start) < budget:
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        for group in opt.param_groups:
            group["lr"] = lr
        offsets = torch.randint(0, len(stream) - args.seq - 1, (args.batch, 1), device=args.device)
        batch = stream[offsets + window]  # random windows of the token stream
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"):
            logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            losses.append(loss.item())
        if step % 500 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {elapsed:.0f} s", flush=True)
        step += 1

    held_loss = held_out_loss(model, held_ids, args.seq, args.device)
    report = {
        "command": "python " + " ".join(sys.argv), "parameters": params, "steps": step,
        "tokens_seen": step * args.batch * args.seq, "train_tokens": len(train_ids), "train_minutes": budget / 60,
        "final_train_loss": sum(losses[-10:]) / len(losses[-10:]), "held_out_loss": held_loss,
        "held_out_perplexity": math.exp(held_loss), "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "config": {k: getattr(args, k) for k in ("dialogues", "vocab", "hidden", "layers", "seq", "batch", "lr")},
    }
    model.eval()
    samples = {}
    for prompt in ["Hello!", "What color is a banana?", "Tell me a story about a fox.", "What is 4 plus 5?"]:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=False)
        out = model.generate(ids.to(args.device), max_new_tokens=80, do_sample=False, eos_token_id=im_end, pad_token_id=im_end)
        samples[prompt] = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    report["greedy_samples"] = samples
    args.out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "train-log.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
