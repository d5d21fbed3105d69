"""The Vulkan target on this machine: WGSL kernels through our wgpu plugin on Mesa's lavapipe (a
Vulkan driver running on the CPU), against the CPU build and numpy."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tvm

from mlcgen.compiler.build import _memory_estimate, plan
from mlcgen.compiler.quantization import get_quantization
from mlcgen.errors import ParamsError
from mlcgen.runtime import vulkan
from mlcgen.runtime.engine import Engine
from mlcgen.targets import vulkan as vulkan_target

from conftest import CONFIGS, gemv_func, rel_err

MLCGEN = [sys.executable, "-c", "from mlcgen.cli import main; main()"]
GIB = 2**30


@pytest.fixture(scope="module")
def lavapipe():
    facts = vulkan.adapter()
    assert facts["backend"] == "Vulkan" and facts["shader_f16"], facts
    return facts


def greedy(engine, prompt, steps):
    logits, tokens, all_logits = engine.prefill(prompt), [], []
    for _ in range(steps):
        tokens.append(int(logits.argmax()))
        all_logits.append(logits)
        logits = engine.decode(tokens[-1])
    return tokens, all_logits


def assert_greedy_matches_cpu(cpu, gpu, prompt, steps, device_argmax=True):
    """The Vulkan engine's greedy tokens are the CPU build's and its logits within 1e-2 of them;
    with device_argmax, decoding with the argmax kernels on the device gives the same tokens."""
    cpu_tokens, cpu_logits = greedy(cpu, prompt, steps)
    gpu_tokens, gpu_logits = greedy(gpu, prompt, steps)
    assert gpu_tokens == cpu_tokens
    assert max(rel_err(g, c) for g, c in zip(gpu_logits, cpu_logits)) <= 1e-2
    if device_argmax:
        gpu.reset()
        gpu.prefill(prompt)
        assert gpu.decode_greedy(cpu_tokens[0], len(cpu_tokens) - 1) == cpu_tokens[1:]


@pytest.mark.parametrize("quantization", ["q4f16_1", "q0f16"])
def test_tiny_model_on_lavapipe_matches_cpu_build(builds, lavapipe, quantization):
    cpu = Engine(builds.dist("gqa_tied", quantization))
    gpu = Engine(builds.dist("gqa_tied", quantization, target="vulkan"), device="vulkan")
    assert gpu.device.dlpack_device_type() == 15  # kDLWebGPU: run by our plugin
    kernels = {k["name"] for k in gpu.manifest["decode_kernels"]}
    folded = quantization == "q4f16_1"  # the RMSNorms between q4 GEMVs folded into them (compiler/norm_fold.py)
    assert any("add_rms_sums" in k for k in kernels) == folded and any("fused_add_rms_norm" in k for k in kernels) != folded
    assert_greedy_matches_cpu(cpu, gpu, [1, 7, 99, 25, 13, 42, 5, 77], 32)  # ids below the tiny vocabulary of 100
    counters = vulkan.counters()
    assert counters["dispatches"] > 32 * 10 and counters["submissions"] < counters["dispatches"]  # batched


@pytest.mark.parametrize("family", ["qwen2", "mistral", "phi3"])
def test_other_families_on_lavapipe_match_cpu_build(builds, lavapipe, family):
    """Qwen2: a bias follows the q/k/v GEMV that a folded norm feeds. Mistral and Phi-3: sliding
    windows (8 and 12 rows: the 24 tokens pass them), whose decode attention TVM's cache runs with
    the keys rotated as they are read (schedules/split_kv_decode.py keeps TVM's kernel for them)."""
    cpu = Engine(builds.dist(family, "q4f16_1"))
    gpu = Engine(builds.dist(family, "q4f16_1", target="vulkan"), device="vulkan")
    assert any("rms_scaled" in k["name"] for k in gpu.manifest["decode_kernels"])
    assert_greedy_matches_cpu(cpu, gpu, [1, 7, 99, 25, 13, 42, 5, 77], 16, device_argmax=False)


def test_sampling_on_lavapipe_draws_the_nucleus(builds, lavapipe, tmp_path):
    """The `sample` kernels on lavapipe draw each nucleus token by its share (3000 logits: three
    chunks; test_device_sampling.py), and the tiny model's sampled stream is decode + those
    kernels step by step."""
    from contextlib import closing

    from mlcgen.runtime.sampling import GenerationConfig, Sampler
    from test_device_sampling import assert_draws_follow_the_nucleus, rows, sampler_vm, step_by_step

    vm, device = sampler_vm(3000, vulkan_target.tvm_target("generic"), tvm.device("webgpu", 0), tmp_path / "sample.so")
    for logits in rows(3000):
        assert_draws_follow_the_nucleus(vm, device, logits)
    gpu = Engine(builds.dist("gqa_tied", "q4f16_1", target="vulkan"), device="vulkan")
    config, prompt = GenerationConfig(temperature=1.5, seed=3), [1, 7, 99, 25]
    first = int(gpu.prefill(prompt).argmax())
    tokens = step_by_step(gpu, first, Sampler(config), 16)
    gpu.reset(), gpu.prefill(prompt)
    with closing(gpu.sample_stream(first, Sampler(config), 16)) as stream:
        assert list(stream) == tokens and len(set(tokens)) > 3


def test_tiny_model_with_int8_decode_activations_on_lavapipe_matches_cpu_build(builds, lavapipe, monkeypatch, tmp_path):
    """A generic-preset build with --int8-activations (compiler/int8_activations.py), with 2 lanes a
    row: hidden 64 = 2 groups, so the q/k/v and gate/up projections after the fused add + RMSNorms
    take int8 codes (the first layer's q/k/v, after a plain norm, keeps fp16, as do o, down and
    lm_head). Fed the CPU build's greedy tokens, the logits stay within int8 rounding of the CPU
    build's (~5e-3 a matmul; on the logits max 2.5e-2, mean 1.1e-2, against 1.1e-3 / 6.5e-4 for
    the same build without the option), and their argmax agrees where the CPU's top two are apart."""
    from mlcgen.compiler.build import build

    generic = vulkan_target.PRESETS["generic"]
    monkeypatch.setitem(vulkan_target.PRESETS, "generic", dataclasses.replace(generic, gemv=dataclasses.replace(generic.gemv, threads_per_row=2)))
    dist = build(builds.checkpoint("gqa_tied"), "q4f16_1", "vulkan", output=tmp_path / "int8", log=None, int8_activations=True)
    library = (dist / "lib.so").read_bytes()
    assert b"dot4I8Packed" in library and b"add_rms_norm_quantize" in library
    cpu = Engine(builds.dist("gqa_tied", "q4f16_1"))
    gpu = Engine(dist, device="vulkan")
    prompt = [1, 7, 99, 25, 13, 42, 5, 77]
    cpu_tokens, cpu_logits = greedy(cpu, prompt, 32)
    gpu_logits = [gpu.prefill(prompt)] + [gpu.decode(t) for t in cpu_tokens[:-1]]
    errors = [rel_err(g, c) for g, c in zip(gpu_logits, cpu_logits)]
    assert max(errors) <= 4e-2 and np.mean(errors) <= 2e-2, errors
    for g, c in zip(gpu_logits, cpu_logits):  # 31 of 32 agree
        top2 = np.sort(c)[-2:]
        assert g.argmax() == c.argmax() or top2[1] - top2[0] < 0.02 * np.ptp(c)


@pytest.mark.parametrize("hidden, max_threads", [(4096, 1024), (4096, 256), (4096, 128), (96, 1024)])
def test_add_rms_norm_writing_int8_codes_on_lavapipe_vs_numpy(hidden, max_threads, lavapipe, tmp_path):
    """The fused residual add + RMSNorm that writes the normed activation as int8 codes: the sum
    exact, the codes and scales as numpy's quantize of numpy's norm (a tie may round the other
    way). 8, 16 and 32 values a thread (4, 2 and 1 threads a group); 96 = 12 threads: a reduction
    tree of 16 with idle threads."""
    from mlcgen.compiler import int8_activations

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((1, 1, hidden)).astype(np.float16) for _ in range(2))
    w = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float16)
    lib = compile_on_lavapipe(int8_activations.add_rms_norm_quantize_kernel(hidden, 1e-5, max_threads).with_attr("global_symbol", "main"), tmp_path)
    dev = tvm.device("webgpu", 0)
    total = tvm.runtime.empty((1, 1, hidden), "float16", dev)
    xq, xd = tvm.runtime.empty((hidden // 4,), "uint32", dev), tvm.runtime.empty((hidden // 32, 2), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(t, dev) for t in (a, b, w)), total, xq, xd)
    s = (a + b)[0, 0]
    np.testing.assert_array_equal(total.numpy()[0, 0], s)
    s32 = s.astype(np.float32)
    normed = (s32 / np.sqrt(np.mean(s32 * s32) + 1e-5) * w.astype(np.float32)).astype(np.float16)
    want_q, want_d = int8_activations.quantize(normed)
    assert (xq.numpy() == want_q).mean() > 0.99
    np.testing.assert_allclose(xd.numpy(), want_d, rtol=1e-3, atol=8)
    assert rel_err(int8_activations.dequantize(xq.numpy(), xd.numpy()), normed.astype(np.float32)) < 1e-2


@pytest.mark.parametrize("knobs", [vulkan_target.PRESETS["nvidia"].gemv, vulkan_target.PRESETS["steamdeck"].gemv],
                         ids=["vulkan-nvidia", "vulkan-steamdeck"])
@pytest.mark.parametrize("swiglu", [False, True])
def test_int8_activation_gemv_on_lavapipe_vs_numpy(knobs, swiglu, lavapipe, tmp_path):
    """A preset's GEMV with int8 activations (dot4I8Packed in the WGSL; the steamdeck preset has no
    packed form of its own): exact against numpy on the activation the codes stand for, up to the
    fp16 output's rounding."""
    from tvm.s_tir import dlight as dl

    from mlcgen.compiler import int8_activations
    from mlcgen.compiler.layers import SWIGLU
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    n, k = 192, 4096
    q4 = get_quantization("q4f16_1")
    func = int8_activations.matmul_func(q4, n, k, "float16", SWIGLU if swiglu else None)
    with vulkan_target.tvm_target("generic"):
        mod = dl.ApplyDefaultSchedule(DequantGEMV(knobs))(tvm.IRModule({"main": func}))
    assert mod["main"].attrs.get("tirx.is_scheduled")
    lib = compile_on_lavapipe(mod["main"], tmp_path)
    assert "dot4I8Packed" in lib.imports[0].inspect_source()
    rng = np.random.default_rng(0)
    qw, qs = q4.pack(rng.standard_normal((n, k), dtype=np.float32) * 0.02)
    codes, scales = int8_activations.quantize(rng.standard_normal(k).astype(np.float16))
    expected = q4.unpack(qw, qs) @ int8_activations.dequantize(codes, scales)
    if swiglu:
        gate, up = expected[:n // 2].astype(np.float16).astype(np.float32), expected[n // 2:].astype(np.float16).astype(np.float32)
        expected = gate / (1 + np.exp(-gate)) * up
    dev = tvm.device("webgpu", 0)
    out = tvm.runtime.empty((1, 1, expected.shape[-1]), "float16", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (codes, scales, qw, qs)), out)
    assert rel_err(out.numpy().astype(np.float32)[0, 0], expected) <= 1e-3


def compile_on_lavapipe(func, tmp_path):
    """A scheduled PrimFunc built for the generic Vulkan target and loaded through the plugin."""
    tvm.compile(tvm.IRModule({"main": func}), vulkan_target.tvm_target("generic")).export_library(str(tmp_path / "kernel.so"))
    return tvm.runtime.load_module(str(tmp_path / "kernel.so"))


def test_kernel_profile_times_every_dispatch_and_bounds_checks_change_no_result(builds, lavapipe):
    dist_dir = builds.dist("gqa_tied", "q4f16_1", target="vulkan")
    gpu = Engine(dist_dir, device="vulkan")
    logits = gpu.prefill([1, 7, 99])
    before = vulkan.counters()["dispatches"]
    with vulkan.kernel_profile() as times:
        tokens = [int(logits.argmax())]
        for _ in range(4):
            tokens.append(int(gpu.decode(tokens[-1]).argmax()))
    assert sum(calls for _, calls in times.values()) == vulkan.counters()["dispatches"] - before
    assert times["batch_decode_paged_kv_rope_append_kernel"][1] == 4 * 2  # per step, per layer (the fused form)
    assert all(seconds > 0 for seconds, _ in times.values())
    # The same steps with the bounds-checked shaders (MLCGEN_WGPU_BOUNDS_CHECKS=1, read per process)
    assert not lavapipe["bounds_checks"]  # the default
    script = ("import sys; from mlcgen.runtime import vulkan; from mlcgen.runtime.engine import Engine; "
              "assert vulkan.adapter()['bounds_checks']; e = Engine(sys.argv[1], device='vulkan'); "
              "t = [int(e.prefill([1, 7, 99]).argmax())]; [t.append(int(e.decode(t[-1]).argmax())) for _ in range(4)]; print(t)")
    out = subprocess.run([sys.executable, "-c", script, str(dist_dir)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MLCGEN_WGPU_BOUNDS_CHECKS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tokens)
    # Stamps around passes only: each pass charged to its last kernel, every dispatch counted
    before = vulkan.counters()["dispatches"]
    with vulkan.kernel_profile(per_pass=True) as passes:
        gpu.decode(tokens[-1])
    assert sum(calls for _, calls in passes.values()) == vulkan.counters()["dispatches"] - before
    assert 0 < len(passes) < len(times) and all(seconds > 0 for seconds, _ in passes.values())


def test_weights_past_the_binding_limit_run_as_row_chunks(lavapipe, tmp_path, monkeypatch):
    """Embedding and lm_head of 1100 x 64 stored in chunks of 256 rows (as Llama-3's 128K-vocab
    tensors are past lavapipe's 128 MiB): same tokens and logits as the CPU build, unsplit."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mlcgen.compiler.build import build

    torch.manual_seed(0)
    cfg = LlamaConfig(**{**CONFIGS["gqa_tied"], "vocab_size": 1100, "tie_word_embeddings": False},
                      max_position_embeddings=256, initializer_range=0.2)
    LlamaForCausalLM(cfg).eval().save_pretrained(tmp_path / "hf")
    cpu = Engine(build(tmp_path / "hf", "q4f16_1", "cpu", output=tmp_path / "cpu", log=None))
    limit = 300 * (64 // 8 * 4)  # bytes of 300 q_weight rows
    monkeypatch.setattr(vulkan_target, "MAX_PARAM_BYTES", limit)
    dist_dir = build(tmp_path / "hf", "q4f16_1", "vulkan", output=tmp_path / "vulkan", log=None)
    params = json.loads((dist_dir / "manifest.json").read_text())["params"]
    for weight in ("model.embed_tokens", "lm_head"):
        assert [p["shape"][0] for p in params if p["name"].startswith(f"{weight}.q_weight.")] == [256, 256, 256, 256, 76]
    vulkan.check_bindings({"params": params}, {**lavapipe, "max_storage_buffer_binding_size": limit}, dist_dir)
    gpu = Engine(dist_dir, device="vulkan")
    assert_greedy_matches_cpu(cpu, gpu, [1, 1099, 7, 256, 255, 768, 1024, 511, 512], 16)  # ids in every chunk and at their edges


def test_chat_cli_on_vulkan(builds, lavapipe):
    script = "/set temperature=0\n/set max_gen_len=12\nHello there, how are you?\n/exit\n"
    replies = {}
    for target, device in (("cpu", "cpu"), ("vulkan", "vulkan")):
        dist = builds.dist("chat-llama-2", "q4f16_1", target=target)
        out = subprocess.run([*MLCGEN, "chat", str(dist), "--device", device], input=script, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        reply = out.stdout.split(">>> Hello there, how are you?", 1)[1].split(">>>", 1)[0].strip()
        assert reply and "Traceback" not in out.stderr
        replies[device] = reply
    assert replies["vulkan"] == replies["cpu"]


def test_sampling_chat_on_vulkan_draws_on_the_device(builds, lavapipe, monkeypatch):
    """A chat at the default temperature and top-p on Vulkan draws each token on the device (no
    logits to the host), repeats its reply for a seed and keeps its cache as it records."""
    from mlcgen.runtime.chat_module import ChatConfig, ChatModule
    from mlcgen.runtime.sampling import GenerationConfig

    dist = builds.dist("chat-llama-2", "q4f16_1", target="vulkan")

    def reply(seed: int):
        chat = ChatModule(dist, device="vulkan", chat_config=ChatConfig(generation=GenerationConfig(max_gen_len=16, seed=seed)))
        assert chat.engine.samples_on_device
        monkeypatch.setattr(chat.engine, "decode", lambda *a: pytest.fail("a sampling chat took logits to the host"))
        text = chat.generate("Hello there, how are you?")
        assert chat.engine.length == len(chat.cached)
        return text, chat.last.decode_tokens

    first = reply(0)
    assert first[1] > 0 and reply(0) == first


def rocm_knobs_for_wgsl(arch):
    """A ROCm preset's decode GEMV knobs, as close as WGSL can run them: activations in 4-wide
    loads (WGSL vectors stop at 4); the packed-fp16 group keeps its pairs and mask tricks, with
    float32 multiply-adds where AMD has v_dot2_f32_f16."""
    from mlcgen.targets import rocm

    return dataclasses.replace(rocm.PRESETS[arch].gemv, activation_lanes=4)


def cuda_knobs_for_wgsl():
    """The CUDA preset's decode GEMV knobs (activation staged in padded shared memory) at WGSL width,
    products summed in float32 (the fp16 sums are CUDA's: test_cuda.py)."""
    from mlcgen.targets import cuda

    return dataclasses.replace(cuda.PRESETS["sm_90"].gemv, activation_lanes=4, fp16_products=False)


@pytest.mark.parametrize("knobs", [vulkan_target.PRESETS["generic"].gemv, vulkan_target.PRESETS["steamdeck"].gemv,
                                   vulkan_target.PRESETS["nvidia"].gemv, rocm_knobs_for_wgsl("gfx1100"), rocm_knobs_for_wgsl("gfx90a"),
                                   cuda_knobs_for_wgsl()],
                         ids=["vulkan-generic", "vulkan-steamdeck", "vulkan-nvidia", "rocm-gfx1100", "rocm-gfx90a", "cuda-sm90"])
# 3072 = 96 groups: 2 or 4 unrolled steps of 32 lanes do not fit; 1376 = 43 groups: the lanes do not
# divide the row, so the packed form pads it (Llama-2-7B's down projection in small: 344 groups)
@pytest.mark.parametrize("k", [4096, 3072, 1376])
def test_preset_gemv_schedule_on_lavapipe_vs_numpy(knobs, k, lavapipe, tmp_path):
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    assert q4_matmul_error_on_lavapipe(DequantGEMV(knobs), gemv_func(256, k), tmp_path, 1, 256, k) <= 1e-3


@pytest.mark.parametrize("k, words", [(4096, True), (1376, False)])
def test_nvidia_gemv_loads_its_activation_as_16_byte_words(k, words):
    """The vulkan:nvidia preset's GEMV reads its fp16 activation as vec4<u32> (TVM keeps the fp16
    declaration; the plugin binds a vec4<u32> view: test above on lavapipe), except where the row
    is padded (1376 = 43 groups), which keeps fp16 loads."""
    from tvm.s_tir import dlight as dl

    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    target = vulkan_target.tvm_target("nvidia")
    with target:
        mod = dl.ApplyDefaultSchedule(DequantGEMV(vulkan_target.PRESETS["nvidia"].gemv))(tvm.IRModule({"main": gemv_func(256, k)}))
    wgsl = tvm.compile(mod, target).mod.imports[0].inspect_source()
    assert ("unpack2x16float((vec4<u32>(x_ptr[" in wgsl) == words
    assert ("vec4<f16>(x_ptr[" in wgsl) != words


@pytest.mark.parametrize("knobs", [vulkan_target.PRESETS["generic"].gemv, vulkan_target.PRESETS["steamdeck"].gemv,
                                   vulkan_target.PRESETS["nvidia"].gemv, rocm_knobs_for_wgsl("gfx90a"), cuda_knobs_for_wgsl()],
                         ids=["vulkan-generic", "vulkan-steamdeck", "vulkan-nvidia", "rocm-gfx90a", "cuda-sm90"])
@pytest.mark.parametrize("k", [4096, 1376])
def test_gate_up_gemv_with_its_swiglu_epilogue_on_lavapipe_vs_numpy(knobs, k, lavapipe, tmp_path):
    """The decode gate/up projection with silu(gate) * up as its epilogue (compiler/layers.py): each
    lane computes gate row r and up row r + 96 of a 192-row weight; 1376 = 43 groups pads the rows."""
    from tvm import te

    from mlcgen.compiler.layers import q4_matmul_swiglu_te
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    q4 = get_quantization("q4f16_1")
    x = te.placeholder((1, 1, k), "float16", "x")
    w = te.placeholder((192, k // 8), "uint32", "w")
    s = te.placeholder((192, k // 32), "float16", "s")
    func = te.create_prim_func([x, w, s, q4_matmul_swiglu_te(q4, x, w, s, "float16")])

    def swiglu(y):
        gate, up = y[..., :96].astype(np.float16).astype(np.float32), y[..., 96:].astype(np.float16).astype(np.float32)
        return gate / (1 + np.exp(-gate)) * up

    assert q4_matmul_error_on_lavapipe(DequantGEMV(knobs), func, tmp_path, 1, 192, k, epilogue=swiglu) <= 1e-3


@pytest.mark.parametrize("knobs", [vulkan_target.PRESETS["generic"].gemv, vulkan_target.PRESETS["nvidia"].gemv,
                                   rocm_knobs_for_wgsl("gfx90a"), cuda_knobs_for_wgsl()],
                         ids=["vulkan-generic", "vulkan-nvidia", "rocm-gfx90a", "cuda-sm90"])
# (rows, k): 8 slots (padded to 64 for the consumer's lanes) with a padded row; 64 slots
@pytest.mark.parametrize("n, k", [(64, 1376), (512, 4096)])
def test_rms_norm_folded_into_the_gemvs_on_lavapipe_vs_numpy(knobs, n, k, lavapipe, tmp_path):
    """compiler/norm_fold.py: the producer GEMV writes the residual sum, the norm's input times
    its weight and its slots' sums of squares; the consumer GEMVs (plain and with the SwiGLU
    epilogue) scale their dot products by the norm's factor or, where they stage it (cuda's knobs),
    their activation. Against numpy's add + RMSNorm + matmul."""
    from tvm.s_tir import dlight as dl

    from mlcgen.compiler import norm_fold
    from mlcgen.compiler.layers import SWIGLU
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    q4, rng, dev, eps = get_quantization("q4f16_1"), np.random.default_rng(0), tvm.device("webgpu", 0), 1e-5
    slot_rows = knobs.rows_per_block * knobs.rows_per_thread

    def run(func, name, args, outs):
        with vulkan_target.tvm_target("generic"):
            mod = dl.ApplyDefaultSchedule(DequantGEMV(knobs))(tvm.IRModule({"main": func}))
        assert mod["main"].attrs.get("tirx.is_scheduled")
        tvm.compile(mod, vulkan_target.tvm_target("generic")).export_library(str(tmp_path / name))
        outs = [tvm.runtime.empty(shape, dtype, dev) for shape, dtype in outs]
        tvm.runtime.load_module(str(tmp_path / name))["main"](*(tvm.runtime.tensor(a, dev) for a in args), *outs)
        return [o.numpy().astype(np.float32).reshape(-1) for o in outs]

    qw, qs = q4.pack(rng.standard_normal((n, k), dtype=np.float32) * 0.02)
    x, residual = rng.standard_normal((1, 1, k)).astype(np.float16), rng.standard_normal((1, 1, n)).astype(np.float16)
    weight = (1 + 0.2 * rng.standard_normal(n)).astype(np.float16)
    h = (residual.reshape(-1) + (q4.unpack(qw, qs) @ x.reshape(-1).astype(np.float32)).astype(np.float16)).astype(np.float32)
    hw = (h * weight.astype(np.float32)).astype(np.float16)
    slots = (h * h).reshape(-1, slot_rows).sum(axis=1)
    out = run(norm_fold.producer_func(q4, n, k, slot_rows), "producer.so", (x, qw, qs, residual, weight),
              [((1, 1, n), "float16"), ((1, 1, n), "float16"), ((n // slot_rows,), "float32")])
    assert rel_err(out[0], h) <= 1e-3 and rel_err(out[1], hw.astype(np.float32)) <= 1e-3 and rel_err(out[2], slots) <= 1e-5

    normed = (h / np.sqrt((h * h).mean() + eps) * weight.astype(np.float32)).astype(np.float16).astype(np.float32)
    vw, vs = q4.pack(rng.standard_normal((192, n), dtype=np.float32) * 0.02)
    y = q4.unpack(vw, vs) @ normed
    gate, up = y[:96].astype(np.float16).astype(np.float32), y[96:].astype(np.float16).astype(np.float32)
    for epilogue, expected in ((None, y), (SWIGLU, gate / (1 + np.exp(-gate)) * up)):
        consumer = norm_fold.consumer_func(q4, 192, n, n // slot_rows, eps, "float16", epilogue, knobs.stage_activation)
        out = run(consumer, f"consumer-{epilogue}.so",
                  (hw.reshape(1, 1, n), slots.astype(np.float32), vw, vs), [((1, 1, expected.size), "float16")])
        assert rel_err(out[0], expected) <= 2e-3


def test_staged_gemv_with_fewer_rows_per_block_on_lavapipe_vs_numpy(lavapipe, tmp_path):
    """100 rows: the CUDA preset's 4 x 2 rows per block do not divide them, so blocks take 2 x 2
    (and the staging copy runs on that smaller block)."""
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    assert q4_matmul_error_on_lavapipe(DequantGEMV(cuda_knobs_for_wgsl()), gemv_func(100, 4096), tmp_path, 1, 100, 4096) <= 1e-3


def test_gfx90a_prefill_schedule_without_matrix_cores_on_lavapipe_vs_numpy(lavapipe, tmp_path):
    """The MFMA prefill rule's tiles, padding (40 tokens, 96 weight rows: neither a whole 64-wide
    tile), LDS staging with the fp16 dequantize and epilogue, with scalar FMAs in place of the
    matrix-core intrinsics (the closest variant that runs here), against numpy on the fp16 weight."""
    from tvm import te, tirx

    from mlcgen.compiler.layers import q4_matmul_te
    from mlcgen.targets.schedules.mfma_matmul import MfmaDequantMatmul

    n, k, tokens = 96, 160, 40
    q4 = get_quantization("q4f16_1")
    seq_len = tirx.Var("seq_len", "int64")
    x = te.placeholder((tirx.IntImm("int64", 1), seq_len, tirx.IntImm("int64", k)), "float16", "x")
    w = te.placeholder((tirx.IntImm("int64", n), tirx.IntImm("int64", k // 8)), "uint32", "w")
    s = te.placeholder((tirx.IntImm("int64", n), tirx.IntImm("int64", k // 32)), "float16", "s")
    func = te.create_prim_func([x, w, s, q4_matmul_te(q4, x, w, s, "float16")])
    rule = MfmaDequantMatmul(matrix_cores=False)
    assert q4_matmul_error_on_lavapipe(rule, func, tmp_path, tokens, n, k, fp16_weight=True) <= 1e-3


def rocm_attention_knobs_for_wgsl(arch):
    """A ROCm preset's decode-attention knobs (block size, rows in flight, split target) with 4-wide
    loads, WGSL's widest vector, in place of 8-wide ones: 32 lanes per head_dim-128 row, not 16."""
    from mlcgen.targets import rocm

    return dataclasses.replace(rocm.PRESETS[arch].attention, vector=4)


def paged_decode_reference(q, pages, indptr, values, lengths):
    """Attention of each sequence's query over its paged K/V in float64: (output, log2-sum-exp)."""
    batch, heads, head_dim = q.shape
    group = heads // pages.shape[2]
    out, lse = np.zeros(q.shape), np.zeros((batch, heads))
    for b, n in enumerate(lengths):
        kv = pages[values[indptr[b]:indptr[b + 1]]].astype(np.float64)  # (pages, 2, kv_heads, page size, head_dim)
        kv = kv.transpose(1, 2, 0, 3, 4).reshape(2, pages.shape[2], -1, head_dim)
        for h in range(heads):
            k, v = kv[0, h // group, :n], kv[1, h // group, :n]
            s = k @ q[b, h].astype(np.float64) / np.sqrt(head_dim)
            p = np.exp(s - s.max())
            out[b, h] = p @ v / p.sum()
            lse[b, h] = (s.max() + np.log(p.sum())) / np.log(2)
    return out, lse


def cuda_attention_knobs_for_wgsl():
    """The cuda preset's decode-attention knobs (its own split target for grouped models) with 4-wide
    loads and register loads (cp.async is CUDA's; its kernel is checked on CUDA: test_cuda.py, benchmarks)."""
    from mlcgen.targets import cuda

    return dataclasses.replace(cuda.PRESETS["sm_90"].attention, vector=4, async_copy=False)


@pytest.mark.parametrize("knobs", [vulkan_target.PRESETS["generic"].attention, vulkan_target.PRESETS["steamdeck"].attention,
                                   dataclasses.replace(vulkan_target.PRESETS["nvidia"].attention, whole_rows=0),
                                   dataclasses.replace(vulkan_target.PRESETS["nvidia"].attention, whole_rows=128, grouped_whole_rows=None),
                                   rocm_attention_knobs_for_wgsl("gfx1100"), rocm_attention_knobs_for_wgsl("gfx90a"),
                                   cuda_attention_knobs_for_wgsl(),
                                   dataclasses.replace(cuda_attention_knobs_for_wgsl(), whole_rows=128, whole_threads=256,
                                                       grouped_whole_rows=None)],
                         ids=["vulkan-generic", "vulkan-steamdeck", "vulkan-nvidia-split", "vulkan-nvidia-whole", "rocm-gfx1100", "rocm-gfx90a", "cuda-sm_90", "whole-sequences"])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(8, 2, 64), (4, 4, 128)], ids=["gqa", "mha"])
def test_split_kv_decode_on_lavapipe_vs_numpy(knobs, heads, kv_heads, head_dim, lavapipe, tmp_path):
    """Three sequences (37, 5 and 150 rows; pages scattered) split along their rows and merged
    again, or (whole-sequences, vulkan-nvidia-whole: 5 pages for 3 sequences, under 128 rows each
    on average) read by one block each, against numpy. Pages of the size mlcgen builds its KV cache with."""
    check_split_kv_decode(knobs, heads, kv_heads, head_dim, [37, 5, 150], tmp_path)


def test_split_kv_decode_merges_more_splits_than_one_round_of_loads_on_lavapipe(lavapipe, tmp_path):
    """One sequence of 1100 rows (18 pages) in 72 splits of a GQA group: the merge kernel loads
    MERGE_LOADS splits' outputs before the splits' maxima and the rest in further rounds."""
    from mlcgen.compiler.build import PAGE_SIZE as page
    from mlcgen.targets.schedules.split_kv_decode import MERGE_LOADS, MIN_SPLIT_ROWS, for_model

    knobs, heads, kv_heads, rows = cuda_attention_knobs_for_wgsl(), 8, 2, 1100
    splits = min(-(-for_model(knobs, heads, kv_heads).blocks // heads), -(-rows // page) * page // MIN_SPLIT_ROWS)
    assert splits > MERGE_LOADS  # (the kernel's own count: split_kv_decode)
    check_split_kv_decode(knobs, heads, kv_heads, 64, [rows], tmp_path)


LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


@pytest.mark.parametrize("knobs", [dataclasses.replace(vulkan_target.PRESETS["nvidia"].attention, whole_rows=0),
                                   dataclasses.replace(vulkan_target.PRESETS["nvidia"].attention, whole_rows=128, grouped_whole_rows=None),
                                   cuda_attention_knobs_for_wgsl()], ids=["vulkan-nvidia-split", "vulkan-nvidia-whole", "cuda-sm_90"])
@pytest.mark.parametrize("heads,kv_heads,head_dim,scaling", [(8, 2, 64, LLAMA3), (4, 4, 128, None)], ids=["gqa-llama3", "mha"])
def test_split_kv_decode_fused_with_rope_and_append_on_lavapipe_vs_numpy(knobs, heads, kv_heads, head_dim, scaling, lavapipe, tmp_path):
    """The fused form (targets/schedules/split_kv_decode.py use_split_kv_decode): from the step's
    unrotated q/k/v it rotates q and the new K, appends K and V as each sequence's last row, and
    attends; against numpy's RoPE (Llama 3's frequencies for the GQA case) and attention."""
    check_split_kv_decode(knobs, heads, kv_heads, head_dim, [37, 5, 150], tmp_path, rope=(5e5, scaling or {}))


def rope_reference(x, position, theta, scaling):
    """x [..., head_dim] rotated at `position` (half-split pairs), in float64, Llama 3's scaling
    written out from its definition."""
    half = x.shape[-1] // 2
    inv = theta ** (-np.arange(half) * 2 / x.shape[-1])
    if scaling:
        wavelength, old = 2 * np.pi / inv, scaling["original_max_position_embeddings"]
        blend = (old / wavelength - scaling["low_freq_factor"]) / (scaling["high_freq_factor"] - scaling["low_freq_factor"])
        inv = np.where(wavelength < old / scaling["high_freq_factor"], inv,
                       np.where(wavelength > old / scaling["low_freq_factor"], inv / scaling["factor"],
                                (1 - blend) * inv / scaling["factor"] + blend * inv))
    angle = np.concatenate([position * inv] * 2)
    x = x.astype(np.float64)
    return x * np.cos(angle) + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * np.sin(angle)


def check_split_kv_decode(knobs, heads, kv_heads, head_dim, lengths, tmp_path, rope=None):
    """split_kv_decode on lavapipe against numpy, for sequences of these lengths; with rope
    (theta, scaling), its fused form, the last row of each sequence the step's own."""
    from mlcgen.compiler.build import PAGE_SIZE as page
    from mlcgen.targets.schedules.split_kv_decode import lanes_per_row, split_kv_decode

    rng = np.random.default_rng(0)
    pages_per_seq = [-(-n // page) for n in lengths]
    values = rng.permutation(sum(pages_per_seq) + 3)[:sum(pages_per_seq)].astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(pages_per_seq)]).astype(np.int32)
    last_page = np.array([n - page * (p - 1) for n, p in zip(lengths, pages_per_seq)], np.int32)
    pages = rng.standard_normal((len(values) + 3, 2, kv_heads, page, head_dim)).astype(np.float16)
    q = rng.standard_normal((len(lengths), heads, head_dim)).astype(np.float16)

    positions = np.array(lengths, np.int32) - 1
    first = q
    if rope:  # the step's q/k/v; the reference gets q and the pages as the kernel should leave them
        first = rng.standard_normal((len(lengths), heads + 2 * kv_heads, head_dim)).astype(np.float16)
        q = np.stack([rope_reference(first[b, :heads], n, *rope) for b, n in enumerate(positions)]).astype(np.float16)
        want_pages = pages.copy()
        for b, n in enumerate(positions):
            row = (values[indptr[b] + n // page], slice(None), slice(None), n % page)
            want_pages[row] = np.stack([rope_reference(first[b, heads:heads + kv_heads], n, *rope), first[b, heads + kv_heads:]])
    rope_items = (rope[0], tuple(sorted(rope[1].items()))) if rope else None
    func = split_kv_decode(heads, kv_heads, head_dim, "float16", knobs, lanes_per_row(head_dim, knobs), page, rope=rope_items)
    tvm.compile(tvm.IRModule({"main": func}), vulkan_target.tvm_target("generic")).export_library(str(tmp_path / "decode.so"))
    lib, dev = tvm.runtime.load_module(str(tmp_path / "decode.so")), tvm.device("webgpu", 0)
    out, lse = tvm.runtime.empty(q.shape, "float16", dev), tvm.runtime.empty(q.shape[:2], "float32", dev)
    args = [tvm.runtime.tensor(a, dev) for a in (first, pages, indptr, values, last_page, np.zeros_like(positions), positions)]
    lib["main"](*args, out, lse, 0, 1.0, 1e4, head_dim**-0.5)  # (the scalars other than sm_scale unused)
    if rope:
        assert np.abs(args[1].numpy().astype(np.float64) - want_pages).max() <= 2e-3  # the rows appended, nothing else changed
        pages = want_pages
    want_out, want_lse = paged_decode_reference(q, pages, indptr, values, lengths)
    assert rel_err(out.numpy().astype(np.float64), want_out) <= 2e-3
    assert np.abs(lse.numpy() - want_lse).max() <= 1e-4


def test_prefill_attention_with_more_blocks_on_lavapipe_vs_numpy(lavapipe, tmp_path):
    """TVM's ragged prefill-attention kernel regenerated for more thread blocks than it has query
    tiles (schedules/prefill_attention.py): causal GQA attention of 37 new tokens against numpy."""
    from tvm.relax.frontend.nn.llm import _prefill_kernels

    from mlcgen.targets.schedules.prefill_attention import RAGGED, prefill_kernel

    heads, kv_heads, d, n = 8, 2, 64, 37
    target = vulkan_target.tvm_target("generic")
    with target:
        func = prefill_kernel(RAGGED, _prefill_kernels._attention_prefill_ragged(kv_heads, heads, d, d, "float16", {}, target), 64, target)
    assert 'T.thread_binding(32, thread="blockIdx.x")' in func.script()  # 64 blocks over 2 KV heads, not 16 each
    tvm.compile(tvm.IRModule({"main": func}), target).export_library(str(tmp_path / "prefill.so"))
    lib, dev = tvm.runtime.load_module(str(tmp_path / "prefill.so")), tvm.device("webgpu", 0)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n, heads, d)).astype(np.float16)
    k, v = (rng.standard_normal((n, kv_heads, d)).astype(np.float16) for _ in range(2))
    indptr, positions = np.array([0, n], np.int32), np.arange(n, dtype=np.int32)
    out, lse = tvm.runtime.empty(q.shape, "float16", dev), tvm.runtime.empty((n, heads), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (q, indptr, k, v, indptr, positions, np.zeros(1, np.int32))), out, lse,
                1, 0, 1.0, 1e4, d**-0.5)  # causal, no rotary (applied before), rope scale/theta unused
    group = heads // kv_heads
    s = np.einsum("ihd,jhd->hij", q.astype(np.float64), np.repeat(k, group, axis=1).astype(np.float64)) * d**-0.5
    s[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    p = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("hij,jhd->ihd", p / p.sum(-1, keepdims=True), np.repeat(v, group, axis=1).astype(np.float64))
    assert rel_err(out.numpy().astype(np.float64), want) <= 2e-3


# 4-wide runs per thread; a row too short for them; the vulkan:nvidia preset's 512 threads a row
@pytest.mark.parametrize("hidden, threads", [(4096, 256), (96, 256), (4096, 512)])
def test_fused_add_rms_norm_schedule_on_lavapipe_vs_numpy(hidden, threads, lavapipe, tmp_path):
    """The residual sum bit for bit (fp16), and its RMS norm, against numpy."""
    from tvm import relax
    from tvm.s_tir import dlight as dl

    from mlcgen.compiler.passes import _add_rms_norm_kernel
    from mlcgen.targets.schedules.add_rms_norm import AddRMSNorm

    a, b, w = (relax.Var(n, relax.TensorType(s, "float16")) for n, s in (("a", [1, 3, hidden]), ("b", [1, 3, hidden]), ("w", [hidden])))
    target = tvm.target.Target({**vulkan_target.tvm_target("generic").export(), "max_num_threads": threads})
    with target:
        mod = dl.ApplyDefaultSchedule(AddRMSNorm(threads))(tvm.IRModule({"main": _add_rms_norm_kernel(a, b, w, 1e-5).with_attr("global_symbol", "main")}))
    assert mod["main"].attrs.get("tirx.is_scheduled")
    tvm.compile(mod, target).export_library(str(tmp_path / "norm.so"))
    lib, dev = tvm.runtime.load_module(str(tmp_path / "norm.so")), tvm.device("webgpu", 0)
    rng = np.random.default_rng(0)
    xa, xb, xw = (rng.standard_normal(s).astype(np.float16) for s in ((1, 3, hidden), (1, 3, hidden), (hidden,)))
    total, normed = tvm.runtime.empty(xa.shape, "float16", dev), tvm.runtime.empty(xa.shape, "float16", dev)
    lib["main"](*(tvm.runtime.tensor(x, dev) for x in (xa, xb, xw)), total, normed)
    want_total = (xa + xb).astype(np.float32)  # fp16 sum, as the kernel stores it
    want_normed = want_total / np.sqrt((want_total**2).mean(-1, keepdims=True) + 1e-5) * xw.astype(np.float32)
    assert np.array_equal(total.numpy().astype(np.float32), want_total)
    assert rel_err(normed.numpy().astype(np.float32), want_normed) <= 1e-3


def q4_matmul_error_on_lavapipe(rule, func, tmp_path, tokens, n, k, fp16_weight=False, epilogue=None) -> float:
    """Schedules `func` (y[1, tokens, n] = x[1, tokens, k] @ dequantize(w[n, k]).T, fp16 out, then
    `epilogue` of y where given) with the schedule rule for the generic Vulkan target, runs it on
    lavapipe on random weights and returns its relative error against numpy (the weight rounded
    to fp16 first where the kernel does so)."""
    from tvm.s_tir import dlight as dl

    target = vulkan_target.tvm_target("generic")
    with target:
        mod = dl.ApplyDefaultSchedule(rule)(tvm.IRModule({"main": func}))
    assert mod["main"].attrs.get("tirx.is_scheduled")
    tvm.compile(mod, target).export_library(str(tmp_path / "q4_matmul.so"))
    lib = tvm.runtime.load_module(str(tmp_path / "q4_matmul.so"))
    q4 = get_quantization("q4f16_1")
    rng = np.random.default_rng(0)
    qw, qs = q4.pack(rng.standard_normal((n, k), dtype=np.float32) * 0.02)
    x = rng.standard_normal((1, tokens, k), dtype=np.float32).astype(np.float16)
    dev = tvm.device("webgpu", 0)
    epilogue = epilogue or (lambda y: y)
    weight = q4.unpack(qw, qs)
    if fp16_weight:
        weight = weight.astype(np.float16).astype(np.float32)
    expected = epilogue(x.astype(np.float32)[0] @ weight.T)
    y = tvm.runtime.empty((1, tokens, expected.shape[-1]), "float16", dev)
    lib["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(qw, dev), tvm.runtime.tensor(qs, dev), y)
    return rel_err(y.numpy().astype(np.float32)[0], expected)


def test_vector_loads_go_through_wide_views_at_any_alignment(lavapipe, tmp_path):
    """The plugin loads vec4s through a second, vec4-typed binding of a read-only buffer when the
    index is a multiple of 4, and element by element otherwise (here: one of each)."""
    from tvm.script import tirx as T

    @T.prim_func
    def copies(a: T.Buffer((1028,), "float16"), b: T.Buffer((1024,), "float16"), c: T.Buffer((1024,), "uint32"),
               d: T.Buffer((1024,), "uint32")):
        for bx in T.thread_binding(4, thread="blockIdx.x"):
            for tx in T.thread_binding(64, thread="threadIdx.x"):
                for v in T.vectorized(4):
                    b[(bx * 64 + tx) * 4 + v] = a[(bx * 64 + tx) * 4 + v + 1]  # index 1 past a multiple of 4
                for v in T.vectorized(4):
                    d[(bx * 64 + tx) * 4 + v] = c[(bx * 64 + tx) * 4 + v]

    tvm.compile(tvm.IRModule({"copies": copies}), vulkan_target.tvm_target("generic")).export_library(str(tmp_path / "copies.so"))
    lib = tvm.runtime.load_module(str(tmp_path / "copies.so"))
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal(1028).astype(np.float16), rng.integers(0, 2**32, 1024, dtype=np.uint32)
    dev = tvm.device("webgpu", 0)
    b, d = tvm.runtime.empty((1024,), "float16", dev), tvm.runtime.empty((1024,), "uint32", dev)
    views = vulkan.counters()["wide_load_views"]
    lib["copies"](tvm.runtime.tensor(a, dev), b, tvm.runtime.tensor(c, dev), d)
    assert vulkan.counters()["wide_load_views"] == views + 2
    assert np.array_equal(b.numpy(), a[1:1025]) and np.array_equal(d.numpy(), c)


def test_subgroup_library_refused_where_subgroups_are_not_32_wide(lavapipe):
    assert not vulkan.subgroups_are(lavapipe, 32)  # lavapipe's subgroups follow its SIMD width
    with pytest.raises(ParamsError, match="subgroups of exactly 32 lanes.*rebuild with --target vulkan"):
        vulkan.check_device({"target": {"name": "vulkan:nvidia", "subgroup_size": 32}}, "dist/x")


def test_library_needing_more_workgroup_memory_than_the_adapter_is_refused(lavapipe):
    target = {"name": "vulkan:big", "workgroup_bytes": lavapipe["max_workgroup_storage_size"] + 1}
    with pytest.raises(ParamsError, match="bytes of workgroup memory.*rebuild with --target vulkan"):
        vulkan.check_device({"target": target}, "dist/x")


def test_buffer_too_large_for_a_binding_is_a_clear_error(lavapipe):
    limit = lavapipe["max_storage_buffer_binding_size"]
    with pytest.raises(ParamsError, match="model.embed_tokens.q_weight.*binds at most"):
        vulkan.check_bindings({"params": [{"name": "model.embed_tokens.q_weight", "shape": [limit // 4 + 1], "dtype": "uint32"}]},
                              lavapipe, "dist/x")


def llama2_7b_manifest(tmp_path, context_window):
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
              "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "torch_dtype": "float16"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    manifest = plan(tmp_path, "q4f16_1", "vulkan:steamdeck", context_window=context_window).manifest
    manifest["memory"] = _memory_estimate(manifest, temporaries=GIB // 2)  # above the 0.06 GiB a 7B build plans
    return manifest


def test_steam_deck_fits_7b_with_2048_context_and_says_what_fits_otherwise(tmp_path):
    budget = int(vulkan_target.PRESETS["steamdeck"].model_memory_gib * GIB)
    assert vulkan.fit_report(llama2_7b_manifest(tmp_path, 2048), budget) is None
    too_long = llama2_7b_manifest(tmp_path, 65536)
    report = vulkan.fit_report(too_long, budget)
    fits = int(report.rsplit("--context-window ", 1)[1].split()[0])
    assert 2048 < fits < 65536
    assert vulkan.fit_report(llama2_7b_manifest(tmp_path, fits), budget) is None
    assert vulkan.fit_report(llama2_7b_manifest(tmp_path, fits + 1024), budget) is not None


def test_missing_vulkan_driver_is_a_clear_error(lavapipe):
    env = {**os.environ, "VK_DRIVER_FILES": "/nonexistent/icd.json"}
    out = subprocess.run([*MLCGEN, "vulkan-info"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0
    assert "no Vulkan adapter found" in out.stderr and "apt-get install mesa-vulkan-drivers" in out.stderr
    assert "Traceback" not in out.stderr


def test_vulkan_info_reports_the_adapter(lavapipe):
    out = subprocess.run([*MLCGEN, "vulkan-info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"name: {lavapipe['name']}" in out.stdout and "runs vulkan:nvidia (subgroup) libraries: False" in out.stdout
