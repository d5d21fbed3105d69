"""`mlcgen build` outputs, conversion from every checkpoint format, KV-cache behaviour, runtime-only use."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import engine, make_checkpoint, manifest, reference_logits, hf_model, rel_err
from mlcgen.compiler import convert
from mlcgen.compiler.build import plan
from mlcgen.runtime import tensor_cache


def shard_digests(params_dir):
    index = tensor_cache.read_index(params_dir)
    return [s["md5sum"] for s in index["records"]], tensor_cache.param_records(index)


def test_dist_layout_and_manifest(tiny_dist):
    files = {p.name for p in tiny_dist.iterdir()}
    assert {"lib.so", "manifest.json", "tensor-cache.json", "params_shard_0.bin", "generation_config.json"} <= files
    m = manifest(tiny_dist)
    assert m["quantization"] == "q4f16_1" and m["target"]["name"] == "cpu:generic" and m["target"]["device"] == "cpu"
    assert m["model"]["architecture"] == "LlamaForCausalLM"
    mem = m["memory"]
    assert mem["params_bytes"] == sum(p.stat().st_size for p in tiny_dist.glob("params_shard_*.bin")) - padding(tiny_dist)
    assert mem["kv_cache_bytes"] == 2 * 2 * 2 * 16 * 256 * 2  # K+V, layers, kv heads, head_dim, the context window, fp16
    assert mem["temporary_bytes"] > 0
    assert mem["total_bytes"] == mem["params_bytes"] + mem["kv_cache_bytes"] + mem["temporary_bytes"]
    assert 4.0 < m["conversion"]["bits_per_param"] < 5.0
    assert 0 < m["conversion"]["worst_group_error"] < 0.5


def padding(dist):
    records = tensor_cache.param_records(tensor_cache.read_index(dist))
    return sum(s["nbytes"] for s in tensor_cache.read_index(dist)["records"]) - sum(r["nbytes"] for r in records.values())


def test_no_leftover_temp_folders(tiny_dist):
    assert not [p for p in tiny_dist.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fmt", ["sharded_safetensors", "bin", "bf16"])
def test_every_checkpoint_format_converts_to_the_same_params(tmp_path, builds, fmt):
    base = builds.checkpoint("gqa_tied")
    if fmt == "sharded_safetensors":
        src = make_checkpoint(tmp_path / fmt, max_shard_size="20KB")
        assert (src / "model.safetensors.index.json").exists()
    elif fmt == "bin":
        src = make_checkpoint(tmp_path / fmt)  # transformers 5 writes only safetensors: redo as .bin
        torch.save(hf_model(src).state_dict(), src / "pytorch_model.bin")
        (src / "model.safetensors").unlink()
    else:
        src = make_checkpoint(tmp_path / fmt, dtype=torch.bfloat16)
    manifest_ = plan(base, "q0f32", "cpu").manifest
    ours, theirs = tmp_path / "a", tmp_path / "b"
    ours.mkdir(), theirs.mkdir()
    convert.convert(base, manifest_, ours, log=None)
    convert.convert(src, manifest_, theirs, log=None)
    a, b = shard_digests(ours), shard_digests(theirs)
    if fmt == "bf16":  # same weights rounded to bf16: compare values, not bytes
        ref = hf_model(src).state_dict()["model.embed_tokens.weight"].numpy()
        got = np.fromfile(theirs / "params_shard_0.bin", np.float32, count=ref.size, offset=b[1]["model.embed_tokens.weight"]["byteOffset"])
        assert np.array_equal(got.reshape(ref.shape), ref)
    else:
        assert a == b


def test_kv_cache_prefill_then_decode_equals_one_prefill(builds):
    eng = engine(builds.dist("gqa_tied", "q0f32"))
    prompt = [5, 9, 13, 21, 34, 55]
    whole = eng.prefill(prompt)
    eng.reset()
    eng.prefill(prompt[:-1])
    stepped = eng.decode(prompt[-1])
    assert rel_err(stepped, whole) < 1e-5
    assert eng.length == len(prompt)


def test_decode_greedy_on_the_device_equals_decode_and_host_argmax(builds):
    """Engine.decode_greedy (argmax on the device, the host a step ahead) gives the tokens of
    decode + numpy argmax, leaves the cache as that loop does (a stop token returned, not
    appended), and decoding continues from it identically."""
    prompt = [5, 9, 13, 21, 34, 55]
    ref, dev = engine(builds.dist("gqa_tied", "q4f16_1")), engine(builds.dist("gqa_tied", "q4f16_1"))
    first = int(ref.prefill(prompt).argmax())
    assert int(dev.prefill(prompt).argmax()) == first
    tokens, token = [], first
    for _ in range(12):
        token = int(ref.decode(token).argmax())
        tokens.append(token)
    assert dev.decode_greedy(first, 12) == tokens and dev.length == ref.length == len(prompt) + 12
    assert rel_err(dev.decode(tokens[-1]), ref.decode(tokens[-1])) < 1e-6
    stop = tokens[5]  # stopping: the stop token is read back a step late, its step popped
    for eng in (ref, dev):
        eng.reset(), eng.prefill(prompt)
    stopped = dev.decode_greedy(first, 12, stop_ids={stop})
    assert stopped == tokens[: tokens.index(stop) + 1]
    assert dev.length == len(prompt) + len(stopped)  # `first` and the tokens before the stop token
    assert dev.decode_greedy(first, 0) == []


@pytest.mark.parametrize("vocab", [100, 3000])
def test_greedy_entry_kernels_pick_numpys_argmax_across_chunks(vocab):
    """The greedy entry's two kernels (a block per 1024 logits, then the chunks' winner) against
    numpy's argmax, the largest value planted twice (two chunks apart at 3000 logits: the first
    wins) and a partial last chunk."""
    import tvm
    from tvm import te, tirx

    from mlcgen.models.llama import _chunk_argmax, _final_argmax

    x = te.placeholder((tirx.IntImm("int64", 1), tirx.IntImm("int64", 1), tirx.IntImm("int64", vocab)), "float32", "x")
    best = _chunk_argmax(x)
    chunks = tvm.compile(te.create_prim_func([x, best]), "llvm")
    b = te.placeholder(best.shape, "float32", "b")
    final = tvm.compile(te.create_prim_func([b, _final_argmax(b)]), "llvm")
    logits = np.random.default_rng(vocab).standard_normal((1, 1, vocab)).astype(np.float32)
    logits[0, 0, [vocab // 3 + 7, vocab - 2]] = logits.max() + 1
    mid, out = tvm.runtime.empty(best.shape, "float32"), tvm.runtime.empty((1, 1), "int32")
    chunks(tvm.runtime.tensor(logits), mid)
    final(mid, out)
    assert out.numpy()[0, 0] == np.argmax(logits) == vocab // 3 + 7


def test_prefill_longer_than_chunk_matches_one_shot(builds):
    prompt = list(range(3, 23))  # 20 tokens, chunk of 8 -> 3 calls
    chunked = engine(builds.dist("gqa_tied", "q0f32", prefill_chunk=8))
    assert manifest(chunked.dist_dir)["prefill_chunk"] == 8
    one_shot = engine(builds.dist("gqa_tied", "q0f32"))
    a, b = chunked.prefill(prompt), one_shot.prefill(prompt)
    assert rel_err(a, b) < 1e-5
    ref = reference_logits(hf_model(builds.checkpoint("gqa_tied")), prompt)[-1]
    assert rel_err(a, ref) < 1e-4
    # and decoding continues from the chunked cache
    assert rel_err(chunked.decode(7), one_shot.decode(7)) < 1e-5


def test_context_window_is_enforced(builds):
    eng = engine(builds.dist("gqa_tied", "q0f32", context_window=32, prefill_chunk=16))
    eng.prefill(list(range(30)))
    eng.decode(1)
    eng.decode(2)
    with pytest.raises(ValueError, match="context window exceeded: 32 tokens in the cache \\+ 1 new > 32"):
        eng.decode(3)
    eng.reset()
    with pytest.raises(ValueError, match="context window exceeded"):
        eng.prefill(list(range(33)))


def test_dump_ir_writes_each_phase(tmp_path, builds):
    out = builds.dist("gqa_tied", "q4f16_1", dump_ir=str(tmp_path / "ir"))
    names = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert names == ["00-input.py", "01-fuse.py", "02-schedule.py", "03-lower.py"]
    assert "fused_add_rms_norm" in (tmp_path / "ir" / "01-fuse.py").read_text()
    assert (out / "lib.so").exists()


def test_runtime_only_tvm_converts_and_runs(tmp_path, builds, tiny_dist):
    """Where only the TVM runtime is installed: `mlcgen convert` into a folder holding just the
    library and manifest, then run it."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("lib.so", "manifest.json"):
        shutil.copy(tiny_dist / name, shipped / name)
    code = f"""
import sys
from mlcgen.cli import main
from mlcgen.runtime import Engine
main(["convert", {str(builds.checkpoint('gqa_tied'))!r}, {str(shipped)!r}], standalone_mode=False)
logits = Engine({str(shipped)!r}).prefill([1, 2, 3])
assert not [m for m in sys.modules if m.startswith(("tvm.relax", "tvm.s_tir"))]
print(int(logits.argmax()))
"""
    env = dict(os.environ, TVM_USE_RUNTIME_LIB="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) == int(engine(tiny_dist).prefill([1, 2, 3]).argmax())
    assert shard_digests(shipped)[0] == shard_digests(tiny_dist)[0]
    assert manifest(shipped)["conversion"] == manifest(tiny_dist)["conversion"] | {"peak_rss_mb": manifest(shipped)["conversion"]["peak_rss_mb"]}
    assert not [p.name for p in shipped.iterdir() if p.name.startswith(".")]


def test_library_prefill_entry_matches_the_compiled_prefill(tmp_path, builds, monkeypatch):
    """The vendor-library prefill (compiler/passes.py offload_prefill_matmuls, what CUDA builds call
    cuBLAS through), on the CPU with numpy standing in for the GEMM: the library's dequantize
    kernel, passed in, fills each row slice of the fp16 weight (the last one shorter); the engine
    prefills with the entry, and the cache it fills decodes as the compiled prefill's does.
    Without the library the engine warns, still loads, and prefills with the compiled kernels."""
    import tvm
    import tvm_ffi

    from mlcgen.compiler.build import build
    from mlcgen.compiler.passes import offload_prefill_matmuls
    from mlcgen.errors import ParamsError
    from mlcgen.runtime import cublas
    from mlcgen.targets import cpu

    slices = []

    def q4_matmul_nt(x, q_weight, q_scale, dequantize, slice_rows, out):
        n, k = q_weight.shape[0], x.shape[-1]
        y = np.empty((int(np.prod(x.shape[:-1])), n), np.float16)
        for first in range(0, n, slice_rows):
            rows = tvm.runtime.empty((min(slice_rows, n - first), k), "float16")
            dequantize(q_weight, q_scale, first, rows)
            slices.append((n, first, rows.shape[0]))
            y[:, first : first + rows.shape[0]] = x.numpy().reshape(-1, k).astype(np.float32) @ rows.numpy().astype(np.float32).T
        out.copyfrom(y.reshape(out.shape))

    slice_bytes = 64 * 96 * 2  # 64 rows of K = 96: qkv (288 rows) in slices of 128, 128, 32
    monkeypatch.setattr(cpu, "graph_passes", lambda target, int8_activations: [offload_prefill_matmuls("prefill_lib", cublas.GEMM, slice_bytes)])
    monkeypatch.setattr(cpu, "runtime_facts", lambda preset, scheme: {"library_prefill": "prefill_lib"}, raising=False)
    monkeypatch.setattr(cublas, "load", lambda: tvm_ffi.register_global_func(cublas.GEMM, q4_matmul_nt, override=True))
    dist = build(builds.checkpoint("mha_untied"), "q4f16_1", "cpu", output=tmp_path / "lib", log=None)
    eng = engine(dist)
    assert eng.prefill_entry == "prefill_lib"
    prompt = [5, 9, 13, 21, 34, 55, 89]
    ours = eng.prefill(prompt)
    assert {(288, 0, 128), (288, 128, 128), (288, 256, 32)} <= set(slices)  # qkv
    assert len(slices) == 2 * (3 + 1 + 3 + 1)  # layers x slices of (qkv, o, gate/up, down)
    next_ours = eng.decode(7)
    eng.reset()
    compiled = eng._forward("prefill", tvm.runtime.tensor(np.array(prompt, np.int32), eng.device))
    assert rel_err(ours, compiled) < 1e-2
    assert rel_err(next_ours, eng.decode(7)) < 1e-2

    monkeypatch.undo()
    monkeypatch.setattr(cublas, "library", lambda: (_ for _ in ()).throw(ParamsError("no libcublas found")))
    with pytest.warns(UserWarning, match="prefills use the compiled kernels: cuBLAS is not available: no libcublas found"):
        eng = engine(dist)
    assert eng.prefill_entry == "prefill"
    assert rel_err(eng.prefill(prompt), compiled) < 1e-6
