"""Decode attention over the paged KV cache on the GPU machine: our split-KV kernel with a sweep of
knobs, its whole-sequence path (one block per KV head, no merge: AttentionKnobs.whole_rows) forced
at every length, and TVM's kernel, at Llama-2-7B (32 KV heads) and Llama-3-8B (8 KV heads, groups
of 4) shapes, batch 1, contexts 128 to 4096.

    python benchmarks/attention_speed.py build .bench/attention   # here: compile the kernels (TVM compiler)
    python benchmarks/attention_speed.py run .bench/attention     # GPU machine: TVM runtime, torch

Each kernel's output and log-sum-exp are checked against torch (float32), before and after it is
timed over calls that rotate through 8 layers' pages (more than the L2 holds), as decode does: GPU
time of all its kernels per call (CUPTI, through torch.profiler; the split kernel is two
launches). GB/s counts the K and V bytes one call must read. The cuda preset's knobs are marked `*`.

Then prefill: TVM's ragged prefill-attention kernel (causal, the new tokens among themselves) for
a 512-token prompt, as TVM generates it (16 blocks per KV head) and regenerated for more blocks
and other tile shapes (schedules/prefill_attention.py; the cuda preset's marked `*`), against
torch's causal attention in float32.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

SHAPES = {"llama2-7b": (32, 32, 128), "llama3-8b": (32, 8, 128)}  # heads, KV heads, head_dim
CONTEXTS = (128, 256, 512, 1024, 4096)
LAYERS = 8  # page buffers rotated through
# (vector, threads, unroll, blocks, *flags) of the split kernel, flags from FLAGS, or ("whole",
# threads, unroll): every context read by one block per (sequence, KV head), no merge
# (AttentionKnobs.whole_rows); earlier sweeps of the split kernel's knobs are in docs/benchmarks.md
# (sessions 19-21, 26-28)
SWEEP = [(8, 128, 4, 528, "async"), (8, 128, 2, 1056, "async", "merge"), (8, 256, 2, 1056, "async", "merge"),
         (8, 256, 2, 528, "async", "merge"), (8, 256, 2, 2112, "async", "merge"),
         (8, 256, 1, 1056, "async", "merge"), (8, 128, 1, 1056, "async", "merge"), ("whole", 512, 4)]
FLAGS = {"async": "async_copy", "merge": "parallel_merge"}  # AttentionKnobs fields the split kernel's flags turn on
PAGE = 64  # rows per KV-cache page: compiler/build.py's PAGE_SIZE (build() checks)
PREFILL_TOKENS = 512
# (blocks, (warps, query rows, KV rows) per tile or None: TVM's); blocks None: TVM's kernel as generated
PREFILL_VARIANTS = [(None, None), (512, None), (512, (8, 64, 32)), (512, (4, 32, 64))]  # others: docs/benchmarks.md


def split_knobs(k) -> tuple:
    """The knobs that tell split-kernel variants apart (to mark the preset's)."""
    return k.vector, k.threads, k.unroll, k.blocks, k.async_copy, k.parallel_merge


def build(out: Path) -> None:
    import tvm
    from tvm.relax.frontend.nn.llm._decode_kernels import _attention_decode
    from tvm.relax.frontend.nn.llm._prefill_kernels import _attention_prefill_ragged

    from mlcgen.compiler.build import PAGE_SIZE
    from mlcgen.targets import cuda
    from mlcgen.targets.schedules.prefill_attention import RAGGED, prefill_kernel
    from mlcgen.targets.schedules.split_kv_decode import AttentionKnobs, for_model, lanes_per_row, split_kv_decode

    assert PAGE == PAGE_SIZE, f"set PAGE to {PAGE_SIZE}, the page size of mlcgen's KV cache"
    target = cuda.tvm_target("sm_90")
    preset = cuda.PRESETS["sm_90"].attention
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for shape, (heads, kv_heads, head_dim) in SHAPES.items():
        kernels = {"tvm": None}
        mine = for_model(preset, heads, kv_heads)
        for knobs in SWEEP:
            if knobs[0] == "whole":
                k = AttentionKnobs(threads=128, unroll=knobs[2], whole_rows=1 << 24, whole_threads=knobs[1])
                kernels["whole/" + "-".join(map(str, knobs[1:]))] = k
                continue
            k = AttentionKnobs(*knobs[:4], **{FLAGS[flag]: True for flag in knobs[4:]})
            mark = "*" if split_knobs(k) == split_knobs(mine) else ""
            kernels["split/" + "-".join(map(str, knobs)) + mark] = k
        for i, (name, knobs) in enumerate(kernels.items()):
            with target:
                func = (_attention_decode(kv_heads, heads, head_dim, "float16", False, {}, target, PAGE) if knobs is None
                        else split_kv_decode(heads, kv_heads, head_dim, "float16", knobs, lanes_per_row(head_dim, knobs), PAGE))
            file = f"{shape}-{i}.so"
            tvm.compile(tvm.IRModule({"main": func}), target).export_library(str(out / file))
            index[file] = {"shape": shape, "kernel": name}
    for shape, (heads, kv_heads, head_dim) in SHAPES.items():
        for i, (blocks, tiles) in enumerate(PREFILL_VARIANTS):
            with target:
                func = _attention_prefill_ragged(kv_heads, heads, head_dim, head_dim, "float16", {}, target)
                if blocks:
                    func = prefill_kernel(RAGGED, func, blocks, target, tiles)
            file = f"prefill-{shape}-{i}.so"
            tvm.compile(tvm.IRModule({"main": func}), target).export_library(str(out / file))
            mark = "*" if blocks == cuda.PRESETS["sm_90"].prefill_blocks and tiles is None else ""
            name = f"blocks {blocks}" + ("" if tiles is None else " tiles " + "-".join(map(str, tiles))) + mark
            index[file] = {"shape": shape, "kernel": name if blocks else "tvm", "prefill": True}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"built {len(index)} kernels into {out}")


def reference(q, pages, values, n):
    """Attention of q [heads, d] over the first n rows of the paged K/V, float32, in torch, and its
    log-sum-exp in base 2 (as the kernels write it)."""
    import torch

    kv = pages[values.long()].float()  # [pages, 2, kv_heads, PAGE, d]
    kv = kv.permute(1, 2, 0, 3, 4).reshape(2, kv.shape[2], -1, kv.shape[-1])[:, :, :n]
    group = q.shape[0] // kv.shape[1]
    k, v = kv[0].repeat_interleave(group, 0), kv[1].repeat_interleave(group, 0)
    s = torch.einsum("hd,hnd->hn", q.float(), k) / math.sqrt(q.shape[-1])
    return torch.einsum("hn,hnd->hd", torch.softmax(s, -1), v), torch.logsumexp(s, -1) / math.log(2)


def run(out: Path) -> None:
    import torch
    import tvm
    from torch.profiler import ProfilerActivity, profile

    from mlcgen.runtime import cuda as cuda_runtime

    sys.path.insert(0, str(Path(__file__).parent))
    from gemv_efficiency import copy_bandwidth

    cuda_runtime.enable()
    copy_gbs = copy_bandwidth()
    index = json.loads((out / "index.json").read_text())
    torch.manual_seed(0)
    rows = []
    for shape, (heads, kv_heads, head_dim) in SHAPES.items():
        for n in CONTEXTS:
            npages = math.ceil(n / PAGE)
            layers = [torch.randn(npages + 8, 2, kv_heads, PAGE, head_dim, device="cuda", dtype=torch.float16) for _ in range(LAYERS)]
            values = torch.randperm(npages + 8, device="cuda", dtype=torch.int32)[:npages]
            q = torch.randn(1, heads, head_dim, device="cuda", dtype=torch.float16)
            want, want_lse = reference(q[0], layers[0], values, n)
            args = [tvm.runtime.from_dlpack(t) for t in (q, torch.tensor([0, npages], dtype=torch.int32, device="cuda"), values,
                                                          torch.tensor([n - PAGE * (npages - 1)], dtype=torch.int32, device="cuda"),
                                                          torch.zeros(1, dtype=torch.int32, device="cuda"))]
            pages = [tvm.runtime.from_dlpack(p) for p in layers]
            output = torch.empty(1, heads, head_dim, device="cuda", dtype=torch.float16)
            lse = torch.empty(1, heads, device="cuda", dtype=torch.float32)
            o_t, lse_t = tvm.runtime.from_dlpack(output), tvm.runtime.from_dlpack(lse)
            nbytes = n * 2 * kv_heads * head_dim * 2
            for file, meta in index.items():
                if meta["shape"] != shape or meta.get("prefill"):
                    continue
                f = tvm.runtime.load_module(str(out / file))["main"]

                def call(i):
                    q_t, indptr, vals, last, zero = args
                    f(q_t, pages[i % LAYERS], indptr, vals, last, zero, zero, o_t, lse_t, 0, 1.0, 1e4, head_dim**-0.5)

                def error():  # of the output and the log-sum-exp, after a call on layer 0's pages
                    output.fill_(float("nan"))
                    lse.fill_(float("nan"))
                    call(0)
                    return max(float((output[0].float() - want).norm() / want.norm()), float((lse[0] - want_lse).abs().max() / want_lse.abs().max()))

                err = error()
                for i in range(10):
                    call(i)
                torch.cuda.synchronize()
                reps = 200
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for i in range(reps):
                        call(i)
                    torch.cuda.synchronize()
                per_kernel = {}  # kernel name -> us a call, in launch order (split kernel: partial, merge)
                for e in prof.events():
                    if e.device_type.name == "CUDA" and "kernel" in e.name:
                        per_kernel[e.name] = per_kernel.get(e.name, 0.0) + e.device_time / reps
                us = sum(per_kernel.values())
                err = max(err, error())  # again, after 210 calls
                rows.append({"shape": shape, "context": n, "kernel": meta["kernel"], "us": us, "gbs": nbytes / us / 1e3,
                             "rel_err": err, "per_kernel_us": list(per_kernel.values())})
    (out / "result.json").write_text(json.dumps({"copy_gbs": copy_gbs, "rows": rows}, indent=1))
    print(f"{torch.cuda.get_device_name()}: copy {copy_gbs:.0f} GB/s; us per call (GB/s of K+V read; us per kernel: "
          "partial + merge), rel_err vs torch")
    for shape in SHAPES:
        print(f"\n{shape}: " + " | ".join(f"ctx {n}" for n in CONTEXTS))
        for kernel in dict.fromkeys(r["kernel"] for r in rows if r["shape"] == shape):
            mine = [r for r in rows if r["shape"] == shape and r["kernel"] == kernel]
            cells = " | ".join(f"{r['us']:6.1f} us ({r['gbs']:5.0f}; {' + '.join(f'{t:.1f}' for t in r['per_kernel_us'])})" for r in mine)
            print(f"  {kernel:22} {cells}   err {max(r['rel_err'] for r in mine):.1e}")
    run_prefill(out, index)


def gpu_us(call, reps: int = 50) -> float:
    """Mean GPU time of call() from CUPTI kernel records."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            call()
        torch.cuda.synchronize()
    return sum(e.device_time for e in prof.events() if e.device_type.name == "CUDA" and "kernel" in e.name) / reps


def run_prefill(out: Path, index: dict) -> None:
    import torch
    import tvm

    n = PREFILL_TOKENS
    print(f"\nprefill attention, {n} new tokens, causal: us per call (TFLOPS), rel_err vs torch")
    for shape, (heads, kv_heads, head_dim) in SHAPES.items():
        q = torch.randn(n, heads, head_dim, device="cuda", dtype=torch.float16)
        k, v = (torch.randn(n, kv_heads, head_dim, device="cuda", dtype=torch.float16) for _ in range(2))
        group = heads // kv_heads
        want = torch.nn.functional.scaled_dot_product_attention(
            q.float().transpose(0, 1), k.float().repeat_interleave(group, 1).transpose(0, 1),
            v.float().repeat_interleave(group, 1).transpose(0, 1), is_causal=True).transpose(0, 1)
        indptr = torch.tensor([0, n], dtype=torch.int32, device="cuda")
        positions, offset = torch.arange(n, dtype=torch.int32, device="cuda"), torch.zeros(1, dtype=torch.int32, device="cuda")
        output = torch.empty_like(q)
        lse = torch.empty(n, heads, device="cuda", dtype=torch.float32)
        args = [tvm.runtime.from_dlpack(t) for t in (q, indptr, k, v, indptr, positions, offset, output, lse)]
        flops = 2 * n * n * head_dim * heads  # two matmuls over the causal half
        for file, meta in index.items():
            if meta["shape"] != shape or not meta.get("prefill"):
                continue
            f = tvm.runtime.load_module(str(out / file))["main"]
            call = lambda: f(*args, 1, 0, 1.0, 1e4, head_dim**-0.5)  # noqa: E731 (causal, RoPE applied before)
            output.fill_(float("nan"))
            call()
            err = float((output.float() - want).norm() / want.norm())
            us = gpu_us(call)
            print(f"  {shape:10} {meta['kernel']:26} {us:8.1f} us ({flops / us / 1e6:5.1f})   err {err:.1e}")


if __name__ == "__main__":
    {"build": build, "run": run}[sys.argv[1]](Path(sys.argv[2]))
