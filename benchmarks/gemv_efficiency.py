"""Decode GEMV efficiency of the GPU schedules, measured on the GPU machine.

The q4f16_1 decode matmul (dequantize inside the reduction) at Llama-2-7B shapes, scheduled by:
- `dlight-f16`: TVM's dlight GEMV rule on the earlier dequantize expression (fp16 arithmetic with an
  int->float conversion per weight): the baseline;
- `dlight`: dlight's GEMV rule on the float32 expression the product now uses;
- `cuda/...`: our rule (targets/schedules/dequant_gemv.py) with a sweep of knobs; the cuda preset's
  knobs are marked `*`;
- `cuda/...+packed`: knobs with packed_fp16 (fp16 pairs, float32 multiply-adds:
  CUDA has no fp16-pair dot instruction with a float32 sum; rows whose vectors the lanes do not
  divide, like the down projection's, are padded to whole steps); `+staged`: the activation staged in
  shared memory; `+fp16`: each word's products summed in fp16 pairs; `+early`: a lane's weights and
  scales loaded at its start by strong loads, at every shape where they fit (the cuda preset: from
  16384 rows);
- `gfx1100`, `gfx90a`: our rule with the ROCm presets' knobs (packed_fp16 on), scheduled for CUDA:
  the closest runnable variant of the AMD kernels here (float32 multiply-adds where AMD has
  v_dot2_f32_f16; the wave64 variant's 64-lane row sum becomes two warps and a shared-memory step).
Each is checked against numpy and timed on weights rotated through more copies than the L2 cache
holds (kernel durations from CUPTI via torch.profiler); efficiency = achieved GB/s over a device
copy's GB/s measured in the same run (1 GiB). `torch-copy` is a copy kernel moving as many bytes
as each matmul reads: what a plain streaming kernel reaches at that size.

    python benchmarks/gemv_efficiency.py build .bench/gemv            # here: compile (needs the TVM compiler)
    python benchmarks/gemv_efficiency.py run .bench/gemv              # GPU machine: TVM runtime + nvcc
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

SHAPES = {"qkv": (12288, 4096), "o": (4096, 4096), "gate_up": (22016, 4096), "down": (4096, 11008),
          "lm_head": (32000, 4096), "down_8b": (4096, 14336)}
LAYER = ("qkv", "o", "gate_up", "down")  # the per-layer kernels: the efficiency figure
# (threads_per_row, rows_per_block, vector_words, unroll, rows_per_thread) and GemvKnobs flags, each
# shown in the variant's name: +packed (packed_fp16), +staged (stage_activation), +fp16
# (fp16_products), +early (early loads, at every shape they fit: the preset takes them from 16384
# rows). Variants measured and dropped in earlier sessions are in docs/benchmarks.md.
PRESET_FLAGS = ("packed", "staged", "fp16", "early")
SWEEP = [((32, 4, 4, 16, 2), ("packed", "staged", "fp16")), ((32, 4, 4, 16, 2), PRESET_FLAGS),
         ((32, 8, 4, 16, 2), PRESET_FLAGS), ((32, 4, 4, 16, 1), PRESET_FLAGS)]
FLAGS = {"packed": ("packed_fp16", True), "staged": ("stage_activation", True), "fp16": ("fp16_products", True),
         "early": ("early_loads_from_rows", 1)}  # flag -> (knob, value); early loads at every shape they fit
L2_BYTES = 50 << 20  # H100 L2: weights rotate through 3x this


def gemv_func(n: int, k: int, dequant_dtype: str):
    """The decode matmul as compiler/layers.py writes it (a dequantize block, then the matmul);
    with dequant_dtype float16, the earlier form: one block, fp16 dequantize arithmetic; with
    "int8", on int8 activation codes (compiler/int8_activations.py)."""
    from tvm import te

    from mlcgen.compiler import int8_activations
    from mlcgen.compiler.layers import q4_matmul_te
    from mlcgen.compiler.quantization import get_quantization

    q4 = get_quantization("q4f16_1")
    out_dtype = "float32" if n == SHAPES["lm_head"][0] else "float16"  # the lm_head keeps float32 logits
    if dequant_dtype == "int8":
        return int8_activations.matmul_func(q4, n, k, out_dtype)
    x = te.placeholder((1, 1, k), "float16", "x")
    w = te.placeholder((n, k // 8), "uint32", "w")
    s = te.placeholder((n, k // 32), "float16", "s")
    if dequant_dtype != "float16":
        return te.create_prim_func([x, w, s, q4_matmul_te(q4, x, w, s, out_dtype)])
    r = te.reduce_axis((0, k), "r")
    acc = te.compute((1, 1, n), lambda a, b, j: te.sum(x[a, b, r].astype("float32") * q4.dequantize(w, s, j, r, "float16").astype("float32"),
                                                         axis=r), name="matmul")
    if out_dtype == "float32":
        return te.create_prim_func([x, w, s, acc])
    return te.create_prim_func([x, w, s, te.compute((1, 1, n), lambda *i: acc[i].astype("float16"), name="cast")])


def build(out: Path) -> None:
    import tvm
    from tvm.s_tir import dlight as dl

    from mlcgen.compiler.passes import inline_dequantize
    from mlcgen.targets import cuda, rocm
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV, GemvKnobs

    cuda_target = cuda.tvm_target("sm_90")
    preset = cuda.PRESETS["sm_90"].gemv
    schedules = {"dlight-f16": (cuda_target, None, "float16"), "dlight": (cuda_target, None, "float32")}
    for knobs, flags in SWEEP:
        g = GemvKnobs(*knobs, **dict(FLAGS[f] for f in flags))
        mark = "*" if g == preset else ""
        name = "-".join(map(str, knobs)) + "".join("+" + f for f in flags)
        schedules[f"cuda/{name}{mark}"] = (cuda_target, DequantGEMV(g), "float32")
    for arch in ("gfx1100", "gfx90a"):
        schedules[arch] = (cuda_target, DequantGEMV(rocm.PRESETS[arch].gemv), "float32")
    for knobs in ((32, 4, 4, 4, 2), (32, 4, 4, 2, 2), (32, 4, 4, 2, 1), (32, 8, 4, 2, 1)):  # rows the lanes tile only
        schedules["cuda/" + "-".join(map(str, knobs)) + "+int8"] = (
            cuda_target, DequantGEMV(GemvKnobs(*knobs, packed_fp16=True)), "int8")
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for shape, (n, k) in SHAPES.items():
        for i, (schedule, (target, rule, dequant_dtype)) in enumerate(schedules.items()):
            if dequant_dtype == "int8" and k // 32 % 32:
                continue
            with target:
                mod = tvm.IRModule({"main": gemv_func(n, k, dequant_dtype)})
                if rule:
                    mod = dl.ApplyDefaultSchedule(rule)(mod)
                    assert mod["main"].attrs.get("tirx.is_scheduled"), f"{schedule} did not apply to {shape}"
                else:  # dlight's GEMV takes the dequantize inlined, as in the product's second round
                    mod = dl.ApplyDefaultSchedule(dl.gpu.GEMV())(inline_dequantize(mod))
            file = f"{shape}-{i}.so"
            tvm.compile(mod, cuda_target).export_library(str(out / file))
            names[file] = {"shape": shape, "schedule": schedule, "int8": dequant_dtype == "int8"}
    (out / "index.json").write_text(json.dumps(names, indent=1))
    print(f"built {len(names)} libraries into {out}")


def copy_bandwidth() -> float:
    import torch

    big = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    copy = big.clone()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    copy.copy_(big)
    start.record()
    for _ in range(20):
        copy.copy_(big)
    end.record()
    torch.cuda.synchronize()
    return 2 * big.numel() * 20 / (start.elapsed_time(end) / 1e3) / 1e9


def kernel_seconds(call, reps: int) -> float:
    """Median device duration of the kernels `call` launches (CUPTI, through torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    call(0)  # warm up (module load, first launch)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(reps):
            call(i)
        import torch

        torch.cuda.synchronize()
    times = [e.device_time for e in prof.events() if e.device_type.name == "CUDA" and "kernel" in e.name]
    return float(np.median(times)) / 1e6


def rotation(nbytes: int) -> int:
    """How many copies of an operand of `nbytes` calls rotate through so that each reads it from
    DRAM: 3x the L2 cache."""
    return max(1, math.ceil(3 * L2_BYTES / nbytes))


def weight_copies(qw: np.ndarray, qs: np.ndarray, dev, nbytes: int) -> list:
    """rotation(nbytes) device copies of a q4 weight (packed words, scales)."""
    import tvm

    return [(tvm.runtime.tensor(qw, dev), tvm.runtime.tensor(qs, dev)) for _ in range(rotation(nbytes))]


def libraries(out: Path, index: dict, shape: str):
    """(meta, loaded library) of each library in `index` built for `shape`."""
    import tvm

    for file, meta in index.items():
        if meta["shape"] == shape:
            yield meta, tvm.runtime.load_module(str(out / file))


def copy_row(shape: str, n: int, k: int, nbytes: int, copies: int, copy_gbs: float) -> dict:
    """What a plain streaming kernel reaches at this size: an fp16 copy moving as many bytes (half
    read, half written) as the matmul reads, sources rotated the same way."""
    import torch

    sources = [torch.empty(nbytes // 4, dtype=torch.float16, device="cuda") for _ in range(copies)]
    target = torch.empty_like(sources[0])
    seconds = kernel_seconds(lambda i: torch.neg(sources[i % copies], out=target), 200)
    return {"shape": shape, "n": n, "k": k, "schedule": "torch-copy", "rel_err": 0.0, "us": seconds * 1e6,
            "bytes": nbytes, "gbs": nbytes / seconds / 1e9, "efficiency": nbytes / seconds / 1e9 / copy_gbs}


def run(out: Path) -> None:
    import torch
    import tvm

    from mlcgen.compiler import int8_activations
    from mlcgen.compiler.quantization import get_quantization
    from mlcgen.runtime import cuda as cuda_runtime

    cuda_runtime.enable()
    dev = tvm.cuda(0)
    q4 = get_quantization("q4f16_1")
    copy_gbs = copy_bandwidth()
    index = json.loads((out / "index.json").read_text())
    rng = np.random.default_rng(0)
    rows = []
    for shape, (n, k) in SHAPES.items():
        w = rng.standard_normal((n, k), dtype=np.float32) * 0.02
        qw, qs = q4.pack(w)
        x = rng.standard_normal((1, 1, k), dtype=np.float32).astype(np.float16)
        ref = x.astype(np.float32)[0, 0] @ q4.unpack(qw, qs).T
        nbytes = qw.nbytes + qs.nbytes + x.nbytes + n * (4 if shape == "lm_head" else 2)
        weights = weight_copies(qw, qs, dev, nbytes)
        copies = len(weights)
        x_dev = [tvm.runtime.tensor(x, dev)]
        codes = int8_activations.quantize(x.reshape(-1))  # int8 forms: exact on what the codes stand for
        int8_ref = int8_activations.dequantize(*codes) @ q4.unpack(qw, qs).T
        codes_dev = [tvm.runtime.tensor(c, dev) for c in codes]
        for meta, lib in libraries(out, index, shape):
            y = tvm.runtime.empty((1, 1, n), "float32" if shape == "lm_head" else "float16", dev)
            xs = codes_dev if meta.get("int8") else x_dev
            lib["main"](*xs, *weights[0], y)
            out_y = y.numpy().astype(np.float32)[0, 0]
            err = float(np.linalg.norm(out_y - ref) / np.linalg.norm(ref))  # int8: against the fp16 activation
            if meta.get("int8"):
                assert np.linalg.norm(out_y - int8_ref) <= 2e-3 * np.linalg.norm(int8_ref), f"{meta['schedule']} on {shape}: wrong"
            else:  # fp16 rounding stays near 1e-4..1e-3 (docs/benchmarks.md); a wrong kernel is off by O(1)
                assert err <= 1e-2, f"{meta['schedule']} on {shape}: relative error {err:.1e} against numpy"
            seconds = kernel_seconds(lambda i: lib["main"](*xs, *weights[i % copies], y), 200)
            rows.append({"shape": shape, "n": n, "k": k, "schedule": meta["schedule"], "rel_err": err, "us": seconds * 1e6,
                         "bytes": nbytes, "gbs": nbytes / seconds / 1e9, "efficiency": nbytes / seconds / 1e9 / copy_gbs})
        del weights
        rows.append(copy_row(shape, n, k, nbytes, copies, copy_gbs))
    result = {"device": torch.cuda.get_device_name(), "copy_gbs": copy_gbs, "rows": rows}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{result['device']}: copy {copy_gbs:.0f} GB/s")
    print(f"{'shape':8} {'schedule':16} {'us':>8} {'GB/s':>7} {'eff':>5} {'rel_err':>8}")
    for r in rows:
        print(f"{r['shape']:8} {r['schedule']:16} {r['us']:8.1f} {r['gbs']:7.0f} {r['efficiency']:5.2f} {r['rel_err']:8.1e}")
    print(f"\nper-layer matmuls together ({'+'.join(LAYER)}):")
    for schedule in dict.fromkeys(r["schedule"] for r in rows):
        mine = [r for r in rows if r["schedule"] == schedule and r["shape"] in LAYER]
        if len(mine) < len(LAYER):  # int8 forms: the 7B down projection's 344 groups are not rewritten
            continue
        nbytes, seconds = sum(r["bytes"] for r in mine), sum(r["us"] for r in mine) / 1e6
        print(f"  {schedule:16} {seconds * 1e6:7.1f} us  {nbytes / seconds / 1e9:6.0f} GB/s  efficiency {nbytes / seconds / 1e9 / copy_gbs:.2f}")


if __name__ == "__main__":
    {"build": build, "run": run}[sys.argv[1]](Path(sys.argv[2]))
