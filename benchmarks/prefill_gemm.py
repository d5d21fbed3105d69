"""Prefill matmul throughput on the GPU machine: the q4f16_1 matmul of a 512-token prompt (dequantize
in the weight-tile load) at Llama-2-7B and Llama-3-8B shapes, as the cuda preset schedules it
(`dlight-wmma`: dlight's Matmul rule on the fp16 dequantize, WMMA; schedules/dequant_matmul.py),
against torch's fp16 matmul (cuBLAS) of the same shape on the dequantized weight, in the same run.
(An mma.sync rule with a sweep of tile shapes ran in this benchmark at commit 83378ee: at best level
with dlight's; docs/benchmarks.md, 2026-12-01 session 11.)
Each is checked against torch's float32 matmul (no TF32) of the same operands (relative error;
output poisoned with NaN first), also at a prompt length that is not a multiple of the tiles
(`ragged` column), and timed with CUDA events over 30 back-to-back calls, weights rotated through
more copies than the L2 cache holds.

    python benchmarks/prefill_gemm.py build .bench/gemm     # here: compile (needs the TVM compiler)
    python benchmarks/prefill_gemm.py run .bench/gemm       # GPU machine: TVM runtime + nvcc, torch
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TOKENS = 512
RAGGED = 300  # checked too: the last token tile is partly padding
SHAPES = {"7b/qkv": (12288, 4096), "o": (4096, 4096), "7b/gate_up": (22016, 4096), "7b/down": (4096, 11008),
          "8b/qkv": (6144, 4096), "8b/gate_up": (28672, 4096), "8b/down": (4096, 14336)}
MODELS = {"llama2-7b": ("7b/qkv", "o", "7b/gate_up", "7b/down"), "llama3-8b": ("8b/qkv", "o", "8b/gate_up", "8b/down")}


def prefill_func(n: int, k: int):
    """The prefill matmul as compiler/layers.py writes it, with the model's symbolic sequence length
    (int64 shapes, as the model's)."""
    from tvm import te, tirx

    from mlcgen.compiler.layers import q4_matmul_te
    from mlcgen.compiler.quantization import get_quantization

    i64 = lambda v: tirx.IntImm("int64", v)  # noqa: E731
    x = te.placeholder((i64(1), tirx.Var("seq_len", "int64"), i64(k)), "float16", "x")
    w = te.placeholder((i64(n), i64(k // 8)), "uint32", "w")
    s = te.placeholder((i64(n), i64(k // 32)), "float16", "s")
    return te.create_prim_func([x, w, s, q4_matmul_te(get_quantization("q4f16_1"), x, w, s, "float16")])


def build(out: Path) -> None:
    import tvm
    from tvm.s_tir import dlight as dl

    from mlcgen.targets import cuda
    from mlcgen.targets.schedules.dequant_matmul import DequantMatmul

    target = cuda.tvm_target("sm_90")
    schedules = {"dlight-wmma": DequantMatmul()}
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for shape, (n, k) in SHAPES.items():
        for i, (name, rule) in enumerate(schedules.items()):
            with target:
                mod = dl.ApplyDefaultSchedule(rule)(tvm.IRModule({"main": prefill_func(n, k)}))
                assert mod["main"].attrs.get("tirx.is_scheduled"), f"{name} did not apply to {shape}"
                lib = tvm.compile(mod, target, tir_pipeline=cuda.TIR_PIPELINE)
            file = f"{shape.replace('/', '-')}-{i}.so"
            lib.export_library(str(out / file))
            index[file] = {"shape": shape, "schedule": name}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"built {len(index)} libraries into {out}")


def run(out: Path) -> None:
    import torch
    import tvm

    from gemv_efficiency import libraries, rotation, weight_copies
    from mlcgen.compiler.quantization import get_quantization
    from mlcgen.runtime import cuda as cuda_runtime

    cuda_runtime.enable()
    dev = tvm.cuda(0)
    q4 = get_quantization("q4f16_1")
    index = json.loads((out / "index.json").read_text())
    rng = np.random.default_rng(0)
    rows = []
    for shape, (n, k) in SHAPES.items():
        flop = 2 * TOKENS * n * k
        qw, qs = q4.pack(rng.standard_normal((n, k), dtype=np.float32) * 0.02)
        x = rng.standard_normal((1, TOKENS, k), dtype=np.float32).astype(np.float16)
        w32 = torch.tensor(q4.unpack(qw, qs), device="cuda")
        x_t = torch.tensor(x, device="cuda")
        torch.backends.cuda.matmul.allow_tf32 = False
        ref = x_t[0].float() @ w32.T
        w16 = w32.half()
        del w32
        weights = weight_copies(qw, qs, dev, qw.nbytes + qs.nbytes)
        copies = len(weights)
        x_dev = tvm.runtime.tensor(x, dev)
        for meta, lib in libraries(out, index, shape):
            err, ragged_err = (rel_err(lib, x, weights[0], ref, tokens, dev) for tokens in (TOKENS, RAGGED))
            y = tvm.runtime.empty((1, TOKENS, n), "float16", dev)
            seconds = gpu_seconds(lambda i: lib["main"](x_dev, *weights[i % copies], y))
            rows.append({"shape": shape, "schedule": meta["schedule"], "rel_err": err, "ragged_err": ragged_err,
                         "us": seconds * 1e6, "tflops": flop / seconds / 1e12})
        w16_copies = [w16] + [w16.clone() for _ in range(rotation(w16.numel() * 2) - 1)]
        out_t = torch.empty((TOKENS, n), dtype=torch.float16, device="cuda")
        seconds = gpu_seconds(lambda i: torch.matmul(x_t[0], w16_copies[i % len(w16_copies)].T, out=out_t))
        err = float((out_t.float() - ref).norm() / ref.norm())
        rows.append({"shape": shape, "schedule": "torch-fp16", "rel_err": err, "ragged_err": float("nan"), "us": seconds * 1e6,
                     "tflops": flop / seconds / 1e12})
        del weights, w16_copies
    result = {"device": torch.cuda.get_device_name(), "tokens": TOKENS, "rows": rows}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{result['device']}: q4f16_1 prefill matmuls, {TOKENS} tokens")
    print(f"{'shape':12} {'schedule':22} {'us':>8} {'TFLOP/s':>8} {'vs torch':>8} {'rel_err':>8} {'ragged':>8}")
    torch_us = {r["shape"]: r["us"] for r in rows if r["schedule"] == "torch-fp16"}
    for r in rows:
        print(f"{r['shape']:12} {r['schedule']:22} {r['us']:8.1f} {r['tflops']:8.1f} {torch_us[r['shape']] / r['us']:8.2f} {r['rel_err']:8.1e} {r['ragged_err']:8.1e}")
    print("\nthe four matmuls of a layer together:")
    for model, shapes in MODELS.items():
        for schedule in dict.fromkeys(r["schedule"] for r in rows):
            us = sum(r["us"] for r in rows if r["schedule"] == schedule and r["shape"] in shapes)
            print(f"  {model:10} {schedule:22} {us:8.1f} us  {sum(torch_us[s] for s in shapes) / us:5.2f}x torch")


def gpu_seconds(call, reps: int = 30) -> float:
    """Mean GPU time of a call over `reps` back-to-back calls, between two CUDA events (after two
    warm-up calls)."""
    import torch

    call(0)
    call(1)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(reps):
        call(i)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def rel_err(lib, x, weights, ref, tokens, dev) -> float:
    """The library's output for the first `tokens` rows of x against torch's, into a NaN-poisoned
    output (an unwritten element makes the error NaN)."""
    import torch
    import tvm

    n = ref.shape[1]
    y = tvm.runtime.tensor(np.full((1, tokens, n), np.nan, np.float16), dev)
    lib["main"](tvm.runtime.tensor(np.ascontiguousarray(x[:, :tokens]), dev), *weights, y)
    got, want = torch.tensor(y.numpy()[0], device="cuda").float(), ref[:tokens]
    return float((got - want).norm() / want.norm())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    {"build": build, "run": run}[sys.argv[1]](Path(sys.argv[2]))
