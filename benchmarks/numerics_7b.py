"""Full-size numerics on the GPU machine: a random Llama-2-7B-shaped HF model, converted there by
mlcgen's converter, against transformers over 256 teacher-forced positions.

    python benchmarks/numerics_7b.py build .bench/numerics     # here: q0f16 and q4f16_1 CUDA libraries
    python benchmarks/numerics_7b.py run .bench/numerics       # GPU machine
    (a quantization after the folder, e.g. `q4f16_1`, builds or runs that one only; `--int8-activations`
    and `--gemv` / `--attention KNOB=VALUE` after `build` build with those options, as in cuda_speed.py)

q0f16 is compared with the fp16 transformers model itself; q4f16_1 with the same model whose
quantized weights are replaced by their dequantized values (computed here in torch, independently
of mlcgen's numpy packer), so what remains is the compiled model's arithmetic. Every mlcgen
position after the first is a decode step (the decode GEMV path). Prints top-1 agreement and the
relative logit error (norm of the difference over the norm of the reference, per position).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cuda_speed import CONTEXT_WINDOW, build_options, compile_from_config, hf_config

QUANTS = ("q4f16_1", "q0f16")
POSITIONS = 256
PREFILLS = (32, 128, 256)


def build(out: Path, *args: str) -> None:
    from mlcgen.runtime import cublas, plugins

    quants = [a for a in args if a in QUANTS]
    for quant in quants or QUANTS:
        compile_from_config("llama2-7b", quant, "cuda:sm_90", out / quant, CONTEXT_WINDOW, POSITIONS, **build_options(args))
    plugins.carry(out, cublas.build_plugin())


def dequantized(w, group: int = 32, max_code: int = 7):
    """q4f16_1's round trip in torch: per-row groups of 32 along K, symmetric, fp16 scales."""
    import torch

    n, k = w.shape
    g = w.float().reshape(n, k // group, group)
    scale = (g.abs().amax(-1, keepdim=True) / max_code).half().float()
    codes = torch.where(scale != 0, (g / scale).round(), torch.zeros_like(g)).clamp(-max_code, max_code)
    return (codes * scale).reshape(n, k)


def run(out: Path, *quants: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mlcgen.compiler.convert import convert
    from mlcgen.runtime import cuda as cuda_runtime
    from mlcgen.runtime import plugins
    from mlcgen.runtime.engine import Engine

    plugins.use_carried(out)
    cuda_runtime.enable()
    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in hf_config("llama2-7b").items() if k != "architectures"})
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    work = Path(tempfile.mkdtemp(prefix="numerics-"))
    start = time.time()
    model.save_pretrained(work / "hf", safe_serialization=True)
    print(f"saved the HF checkpoint in {time.time() - start:.0f} s", flush=True)
    ids = torch.randint(3, config.vocab_size, (1, POSITIONS), generator=torch.Generator().manual_seed(1))
    quants = quants or QUANTS
    manifests = {quant: json.loads((out / quant / "manifest.json").read_text()) for quant in quants}
    refs = {}
    with torch.inference_mode():
        refs["q0f16"] = model(ids.cuda()).logits[0].float().cpu().numpy()
        if "q4f16_1" in manifests:
            quantized = {src for w in manifests["q4f16_1"]["weights"] if w["quantized"] for src in w["hf"]}
            for name, param in model.named_parameters():
                if name in quantized:
                    param.copy_(dequantized(param).half())
            refs["q4f16_1"] = model(ids.cuda()).logits[0].float().cpu().numpy()
    del model
    torch.cuda.empty_cache()
    results = {}
    for quant in quants:
        dist_dir = work / quant
        shutil.copytree(out / quant, dist_dir)
        start = time.time()
        convert(work / "hf", manifests[quant], dist_dir, log=None)
        converted = time.time() - start
        print(f"{quant}: converted on the device in {converted:.0f} s", flush=True)
        engine = Engine(dist_dir)
        got = np.stack([engine.prefill(ids[0, :1].numpy())] + [engine.decode(int(t)) for t in ids[0, 1:]])
        ref = refs[quant]
        prefill = {}
        for entry in dict.fromkeys(["prefill", engine.prefill_entry]):  # the compiled kernels, then cuBLAS's
            engine.prefill_entry = entry
            for n in PREFILLS:  # the prefill path: logits of a prompt's last token
                engine.reset()
                last = engine.prefill(ids[0, :n].numpy())
                prefill[f"{entry} {n}"] = (float(np.linalg.norm(last - ref[n - 1]) / np.linalg.norm(ref[n - 1])),
                                           bool(last.argmax() == ref[n - 1].argmax()))
        del engine
        err = np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
        top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
        results[quant] = {"convert_s": converted, "top1": top1, "rel_err_max": float(err.max()), "rel_err_mean": float(err.mean()),
                          "prefill_rel_err_top1_same": prefill}
        print(f"{quant}: top-1 agreement {top1:.2%} over {POSITIONS} positions "
              f"(1 prefilled, then decode steps); relative logit error max {err.max():.2e}, mean {err.mean():.2e}; "
              "prefills (entry, tokens: error, same top-1): " + ", ".join(f"{k}: {e:.2e} {same}" for k, (e, same) in prefill.items()),
              flush=True)
        shutil.rmtree(dist_dir)
    shutil.rmtree(work)
    (out / "result.json").write_text(json.dumps(results, indent=1))


def noise(out: Path) -> None:
    """The floor to read run()'s numbers against: transformers in fp16 against itself in fp32, on
    the same dequantized random model and tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in hf_config("llama2-7b").items() if k != "architectures"})
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()  # float32
    ids = torch.randint(3, config.vocab_size, (1, POSITIONS), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.inference_mode():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.copy_(dequantized(param.half()))
        ref = model(ids).logits[0].float()
        got = model.half()(ids).logits[0].float()
    err = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"transformers fp16 vs fp32, same weights: top-1 agreement {top1:.2%}; relative logit error max "
          f"{err.max().item():.2e}, mean {err.mean().item():.2e}")


if __name__ == "__main__":
    {"build": build, "run": run, "noise": noise}[sys.argv[1]](Path(sys.argv[2]), *sys.argv[3:])
