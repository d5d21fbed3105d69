"""Peak memory of weight conversion at Llama-2-7B shape.

Writes a random Llama-2-7B-shaped fp16 checkpoint (sharded safetensors, ~13.5 GB) unless one is
already there, then converts it in a child process and prints that process's peak RSS and time.

    python benchmarks/convert_7b.py /tmp/llama2-7b-shape [--quantization q4f16_1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

LLAMA2_7B = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                 rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=False,
                 hidden_act="silu", torch_dtype="float16")


def hf_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    d, f, hd = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], d)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes |= {f"{p}.self_attn.q_proj.weight": (d, d), f"{p}.self_attn.k_proj.weight": (kv, d),
                   f"{p}.self_attn.v_proj.weight": (kv, d), f"{p}.self_attn.o_proj.weight": (d, d),
                   f"{p}.mlp.gate_proj.weight": (f, d), f"{p}.mlp.up_proj.weight": (f, d),
                   f"{p}.mlp.down_proj.weight": (d, f), f"{p}.input_layernorm.weight": (d,),
                   f"{p}.post_attention_layernorm.weight": (d,)}
    return shapes | {"model.norm.weight": (d,), "lm_head.weight": (c["vocab_size"], d)}


def write_checkpoint(out: Path, config: dict, shard_bytes: int = 2 << 30) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shards, current, size, weight_map = [], {}, 0, {}

    def flush():
        nonlocal current, size
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(current, out / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in current})
        shards.append(name)
        current, size = {}, 0

    for name, shape in hf_shapes(config).items():
        current[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
        size += current[name].nbytes
        if size >= shard_bytes:
            flush()
    if current:
        flush()
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(config, indent=1))


CHILD = """
import json, sys, time, resource
from pathlib import Path
from mlcgen.compiler.build import plan
from mlcgen.compiler.convert import convert
src, quant, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
manifest = plan(src, quant, "cpu").manifest
out.mkdir(parents=True, exist_ok=True)
stats = convert(src, manifest, out, log=None)
print(json.dumps({"quantization": quant, "summary": stats.summary(), "peak_rss_mb": stats.peak_rss_mb, "seconds": stats.seconds}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--quantization", default="q4f16_1")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not (args.checkpoint / "config.json").exists():
        print(f"writing a random Llama-2-7B-shaped checkpoint to {args.checkpoint} ...", flush=True)
        write_checkpoint(args.checkpoint, LLAMA2_7B)
    out = args.out or args.checkpoint.with_name(args.checkpoint.name + f"-{args.quantization}-params")
    result = subprocess.run([sys.executable, "-c", CHILD, str(args.checkpoint), args.quantization, str(out)],
                            capture_output=True, text=True, check=True)
    print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
