"""CUDA builds, compiled here (no GPU in CI): the library holds CUDA source for nvcc at load time.
Running them is measured on the GPU machine (docs/benchmarks.md)."""

import re
import shutil
import subprocess

import pytest

from mlcgen.compiler import pipeline
from mlcgen.compiler.build import export_ir, plan
from mlcgen.errors import ConfigError


def preset_gemv_source(n: int, k: int) -> str:
    """The CUDA source of the sm_90 preset's decode GEMV for an [n, k] weight."""
    import tvm
    from conftest import gemv_func
    from tvm.s_tir import dlight as dl

    from mlcgen.targets import cuda
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    target = cuda.tvm_target("sm_90")
    with target:
        mod = dl.ApplyDefaultSchedule(DequantGEMV(cuda.PRESETS["sm_90"].gemv))(tvm.IRModule({"main": gemv_func(n, k)}))
    return tvm.compile(mod, target).mod.imports[0].inspect_source()


def assert_nvcc_compiles(source: str, tmp_path) -> None:
    """Where nvcc exists (this machine and CI have it, no GPU), the CUDA source compiles for sm_90:
    our inline PTX and CUDA functions assemble."""
    if not shutil.which("nvcc"):
        return
    (tmp_path / "kernel.cu").write_text(source)
    result = subprocess.run(["nvcc", "--cubin", "-arch=sm_90", "-o", str(tmp_path / "kernel.cubin"), str(tmp_path / "kernel.cu")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cuda_build_leaves_graphs_to_the_engine_and_uses_our_norm_and_attention_kernels(builds):
    p = plan(builds.checkpoint("gqa_tied"), "q4f16_1", "cuda")
    target = p.target_module.tvm_target(p.preset)
    mod = pipeline.run(export_ir(p, target), p.target_module, target)
    script = mod.script()
    # no graph regions of the library's own: the engine captures whole decode steps (runtime/cuda_graph.py)
    assert "cuda_graph" not in script and p.manifest["target"]["decode_graphs"] == "whole_step"
    assert '"mlcgen.kernel": "add_rms_norm"' in script and 'thread="blockIdx.x"' in script
    # split-KV decode attention, fused with the step's RoPE and KV append; the unfused form is not kept
    decode = {gv.name_hint: f.script() for gv, f in mod.functions_items() if gv.name_hint.startswith("batch_decode_paged_kv")}
    assert list(decode) == ["batch_decode_paged_kv_rope_append"], list(decode)
    assert 'T.sblock("attend")' in decode["batch_decode_paged_kv_rope_append"] and 'T.sblock("merge")' in decode["batch_decode_paged_kv_rope_append"]
    # prefill attention: TVM's kernels with the preset's 512 blocks (2 KV heads: 256 each, not 16)
    prefill = {gv.name_hint: f.script() for gv, f in mod.functions_items() if gv.name_hint.startswith("batch_prefill")}
    assert {"batch_prefill_ragged_kv", "batch_prefill_paged_kv"} <= set(prefill)
    assert all('T.thread_binding(256, thread="blockIdx.x")' in script for script in prefill.values())
    dist = builds.dist("gqa_tied", "q4f16_1", target="cuda")
    assert (dist / "lib.so").stat().st_size > 0


@pytest.mark.parametrize("kv_heads,kernels", [(32, ["512", "128", "128"]), (8, ["128", "128"])], ids=["mha", "gqa"])
def test_cuda_decode_attention_reads_short_sequences_whole_for_mha_only(kv_heads, kernels, tmp_path):
    """The cuda preset's decode attention: for an MHA model a 512-thread kernel (one block per head
    for sequences of up to whole_rows rows, writing the output: no merge) beside the split and merge
    kernels; for a grouped model, whose few KV heads make too few blocks, no such kernel is built.
    The split kernel copies K/V rows into shared memory with cp.async, two steps in flight."""
    import tvm

    from mlcgen.targets import cuda
    from mlcgen.targets.schedules.split_kv_decode import for_model, lanes_per_row, split_kv_decode

    knobs = cuda.PRESETS["sm_90"].attention
    func = split_kv_decode(32, kv_heads, 128, "float16", knobs, lanes_per_row(128, knobs), 64)
    source = tvm.compile(tvm.IRModule({"main": func}), cuda.tvm_target("sm_90")).mod.imports[0].inspect_source()
    assert re.findall(r"__launch_bounds__\((\d+)\) batch_decode_paged_kv_kernel\w*\(.*\{", source) == kernels
    if kv_heads == 32:  # the whole kernel writes the output and log-sum-exp itself
        start = source.rindex("__launch_bounds__(512)")  # its definition (declarations come first)
        whole = source[start:source.index('extern "C"', start)]
        assert "(output_ptr + " in whole and "lse_ptr[" in whole and "part_o" not in whole
        assert "mlcgen_cp_async" not in whole  # (registers: the rows of a whole head are read in one or two steps)
    rows = for_model(knobs, 32, kv_heads).unroll  # a lane's K and V rows a step, copied before the loop and in it
    assert (source.count("mlcgen_cp_async16(staged"), source.count("mlcgen_cp_async_wait_one();")) == (2 * 2 * rows, 1)
    assert_nvcc_compiles(source, tmp_path)


def test_async_copy_needs_16_byte_lanes_and_fits_static_shared_memory():
    from mlcgen.targets.schedules.split_kv_decode import AttentionKnobs, lanes_per_row, split_kv_decode

    for knobs, why in [(AttentionKnobs(vector=4, async_copy=True), "16 bytes a lane"),
                       (AttentionKnobs(threads=128, unroll=8, async_copy=True), "48 KiB|49152 bytes")]:
        with pytest.raises(ValueError, match=why):
            split_kv_decode(32, 8, 128, "float16", knobs, lanes_per_row(128, knobs), 64)


def test_cuda_decode_folds_the_norm_before_each_qkv_projection_into_the_gemvs_around_it(builds):
    """compiler/norm_fold.py with the sm_90 preset: layer 0's down projection writes the residual
    sum, h * w and its slots' sums of squares; layer 1's q/k/v GEMV sums the slots and normalizes
    its activation where it stages it in shared memory, so its fp16 products see the normalized
    activation. The norm before each gate/up projection stays a kernel (fold_into_swiglu=False)."""
    p = plan(builds.checkpoint("gqa_tied"), "q4f16_1", "cuda")
    target = p.target_module.tvm_target(p.preset)
    mod = pipeline.run(export_ir(p, target), p.target_module, target)
    decode = mod["decode"].script()
    layers = p.manifest["model"]["config"]["num_hidden_layers"]  # 2
    assert decode.count("q4_matmul_add_rms_sums(") == decode.count("q4_matmul_rms_scaled(") == layers - 1
    assert decode.count("fused_add_rms_norm(") == layers  # before each gate/up projection
    consumer = next(f.script() for gv, f in mod.functions_items() if gv.name_hint.startswith("q4_matmul_rms_scaled"))
    assert re.search(r'rms_normalized\w*_shared = T.sblock_alloc_buffer\(.*scope="shared"', consumer) and "T.rsqrt(" in consumer


def test_folded_norms_with_fp16_products_need_the_staged_activation():
    from mlcgen.targets import cuda
    from mlcgen.targets.schedules.dequant_gemv import GemvKnobs

    assert cuda.PRESETS["sm_90"].gemv.fold_rms_norm and cuda.PRESETS["sm_90"].gemv.fp16_products
    with pytest.raises(ValueError, match="without stage_activation .* fp16 products would overflow"):
        GemvKnobs(packed_fp16=True, fp16_products=True, fold_rms_norm=True)


@pytest.mark.parametrize("quantization", ["q0f32", "q4f32_1"])
@pytest.mark.parametrize("target", ["cuda", "rocm", "vulkan"])
def test_gpu_targets_refuse_float32_activations(builds, quantization, target):
    with pytest.raises(ConfigError, match=f"--quantization {quantization} is not supported on target {target} .*choose one of: q4f16_1, q0f16"):
        plan(builds.checkpoint("gqa_tied"), quantization, target)


@pytest.mark.parametrize("model", ["gqa_tied", "qwen2"])
def test_int8_activations_rewrite_the_decode_matmuls_after_each_fused_norm(builds, model):
    """--int8-activations on CUDA, with 2 lanes a row so that the tiny model's rows (2 groups) tile:
    the decode step's fused add + RMSNorms write int8 codes and the q/k/v and gate/up matmuls read
    them in __dp4a; the prefill keeps its norms and matmuls. Qwen2's q/k/v bias fuses into the
    int8 matmul's kernel (its dimensions int64, as Relax's)."""
    import dataclasses

    import tvm

    from mlcgen.targets import cuda

    preset = cuda.PRESETS["sm_90"]
    narrow = dataclasses.replace(preset, gemv=dataclasses.replace(preset.gemv, threads_per_row=2))
    p = plan(builds.checkpoint(model), "q4f16_1", "cuda", int8_activations=True)
    assert p.manifest["int8_activations"]
    target = p.target_module.tvm_target(p.preset)
    cuda.PRESETS["sm_90"] = narrow
    try:
        mod = pipeline.run(export_ir(p, target), p.target_module, target, int8_activations=True)
    finally:
        cuda.PRESETS["sm_90"] = preset
    decode = mod["decode"].script()
    assert decode.count("add_rms_norm_quantize") >= 3 and "q4_int8_matmul" in decode  # layer 0's first norm has no add
    assert "add_rms_norm_quantize" not in mod["prefill"].script()
    # Qwen2's q/k/v bias in the int8 matmul's kernel
    assert bool(re.search(r"fused_q4_int8_matmul\w*_add\(", decode)) == (model == "qwen2")
    matmul = next(f for gv, f in mod.functions_items() if gv.name_hint.startswith("q4_int8_matmul"))
    source = tvm.compile(tvm.IRModule({"main": matmul.with_attr("global_symbol", "main")}), target).mod.imports[0].inspect_source()
    assert "__dp4a(" in source


@pytest.mark.parametrize("target, quantization, why", [("cpu", "q4f16_1", "implemented for the cuda, rocm and vulkan targets, not for cpu"),
                                                         ("vulkan", "q0f16", "applies to the q4 matmuls of q4f16_1, not to --quantization q0f16")])
def test_int8_activations_where_they_do_not_apply_are_refused(builds, target, quantization, why):
    with pytest.raises(ConfigError, match=f"--int8-activations (is )?{why}"):
        plan(builds.checkpoint("gqa_tied"), quantization, target, int8_activations=True)


@pytest.mark.parametrize("target", ["cuda", "rocm"])
def test_float_weight_builds_bind_every_kernel_to_gpu_threads(builds, target):
    """q0f16: the prefill matmuls take dlight's Matmul rule (LowBatchGEMV had left them mostly
    unbound: host code that segfaulted on the GPU), the decode GEMVs dlight's GEMV rule; the
    pipeline's last schedule pass checks every kernel. No cuBLAS entry without q4 matmuls."""
    p = plan(builds.checkpoint("gqa_tied"), "q0f16", target)
    target_obj = p.target_module.tvm_target(p.preset)
    mod = pipeline.run(export_ir(p, target_obj), p.target_module, target_obj)
    names = {gv.name_hint for gv in mod.get_global_vars()}
    assert "prefill_cublas" not in names and "library_prefill" not in p.manifest["target"]
    matmuls = [f for gv, f in mod.functions_items() if gv.name_hint.startswith("fused_matmul")]
    assert matmuls and all('thread="blockIdx.' in f.script() for f in matmuls)


def test_thread_binding_check_names_the_unscheduled_kernel():
    import tvm
    from tvm import te

    from mlcgen.compiler.passes import check_thread_bindings

    a = te.placeholder((64,), "float16", "a")
    doubled = te.compute((64,), lambda i: a[i] * 2, name="doubled")
    mod = tvm.IRModule({"twice": te.create_prim_func([a, doubled])})
    with pytest.raises(RuntimeError, match="outside any thread binding.*twice: doubled"):
        check_thread_bindings(mod)


def test_q4_matmuls_take_our_decode_gemv_and_a_tiled_prefill(builds):
    """Decode matmuls (batch 1): our GEMV rule (rows on threadIdx.y, 128-bit weight loads into
    registers); prefill matmuls: a shared-memory tiling with the dequantize in the weight-tile load.
    No q4 matmul is left with a float weight buffer in global memory."""
    p = plan(builds.checkpoint("gqa_tied"), "q4f16_1", "cuda")
    target = p.target_module.tvm_target(p.preset)
    mod = pipeline.run(export_ir(p, target), p.target_module, target)
    kernels = {gv.name_hint: f.script() for gv, f in mod.functions_items() if "q4_matmul" in gv.name_hint}
    gemv = {n for n, s in kernels.items() if 'thread="threadIdx.y"' in s and re.search(r"T.vectorized\((T.int64\()?4\)", s)}
    # the dequantized weight tile in shared memory (a decode GEMV may stage its activation there too)
    tiled = {n for n, s in kernels.items() if re.search(r"dequantize\w*_shared = T.sblock_alloc_buffer", s)}
    assert gemv and tiled and gemv.isdisjoint(tiled) and gemv | tiled == set(kernels), (gemv, tiled, set(kernels))
    assert all('"uint32", scope="local"' in kernels[n] for n in gemv)  # the packed words, loaded to registers
    for name, script in kernels.items():
        assert not re.search(r'dequantize\w* = T.sblock_alloc_buffer\(\([^)]*\), "float32"\)', script), name


def test_preset_decode_gemv_stages_the_activation_and_sums_products_in_fp16_pairs(tmp_path):
    """The sm_90 preset's GEMV at a 7B row length: the activation copied once into padded shared
    memory (80-byte rows: 32 fp16 values + 16 bytes), each code pair made by one LOP3 (inline PTX)
    and multiplied-added in packed fp16 pairs (__hfma2: TVM's own float16x2 arithmetic comes out
    lane by lane, which nvcc leaves as scalar fp16). Its results are checked against numpy on the
    GPU machine (benchmarks/gemv_efficiency.py: relative error 3.8e-4; float32 products 2.1e-4)."""
    source = preset_gemv_source(256, 4096)
    assert re.search(r"__shared__ alignas\(\d+\) uint4 x_shared_ptr\[640\]", source)  # 4096 / 32 rows x 5 uint4
    assert "lop3.b32" in source and "0x64006400" in source
    assert "mlcgen_magic_pair<0x000f000f>(" in source and "mlcgen_magic_pair<0x00f000f0>(" in source  # low and next nibbles
    assert source.count("mlcgen_q4_word_dot(w_local") == 2 * 4 * 4  # each word of 2 rows x 4 groups, one call each
    assert "__hfma2(" in source and "((float)(make_half2(" not in source  # packed fp16 products, no float32 ones
    assert_nvcc_compiles(source, tmp_path)  # the hand-written CUDA of the word dot


@pytest.mark.parametrize("rows", [16384, 4096])
def test_preset_gemv_loads_weights_and_scales_early_from_16384_rows(rows, tmp_path):
    """From 16384 rows (the gate/up and lm_head GEMVs), each lane's weight words and scales (2 rows
    x 4 steps at K = 4096) are loaded into registers by strong loads, written before the block
    stages its activation and waits at its barrier, where ptxas keeps them (ordinary loads it moved
    past the barrier, the scales last); a GEMV of 4096 rows (one wave of blocks) keeps ordinary
    loads. Both checked against numpy on the GPU machine (benchmarks/gemv_efficiency.py)."""
    source = preset_gemv_source(rows, 4096)
    kernel = source[source.index('extern "C" __global__'):]
    if rows == 4096:
        assert "mlcgen_strong_load" not in kernel and "uint w_local_ptr[8];" in kernel  # a step's words at a time
        return
    assert "uint w_local_ptr[32];" in kernel and "half s_local_ptr[8];" in kernel
    staging = re.search(r"\n\s+x_shared_ptr\[", kernel).start()  # the activation's store into shared memory
    assert max(kernel.index("= mlcgen_strong_load_words(("), kernel.index("= mlcgen_strong_load_half((")) < staging
    assert staging < kernel.index("__syncthreads()")
    assert "ld.relaxed.gpu.global.v4.u32" in source and "ld.relaxed.gpu.global.u16" in source
    assert_nvcc_compiles(source, tmp_path)  # the strong loads' inline PTX


def test_early_loads_are_refused_off_cuda():
    """The early loads are CUDA inline PTX: a ROCm GEMV wide enough to take them is refused, not
    miscompiled (narrower ones run the CUDA knobs on WGSL in tests/test_vulkan.py)."""
    from dataclasses import replace

    import tvm
    from conftest import gemv_func
    from tvm.s_tir import dlight as dl

    from mlcgen.targets import rocm
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    target = rocm.tvm_target("gfx1100")
    rule = DequantGEMV(replace(rocm.PRESETS["gfx1100"].gemv, early_loads_from_rows=1))
    with target, pytest.raises(ValueError, match="CUDA inline PTX"):  # K = 2048: the preset's 2 steps a lane in one round
        dl.ApplyDefaultSchedule(rule)(tvm.IRModule({"main": gemv_func(16384, 2048)}))


def test_down_projection_rows_are_padded_into_the_preset_gemv():
    """Llama-2-7B's down projection (344 groups a row, not a multiple of 32 lanes): padded to 352
    groups (one round of 11 steps a lane), the activation staged with zeros past the row (352 rows
    of 5 uint4 in shared memory), the padded groups' weight and scale reads clamped to the row's
    last group (343), and still the fp16-pair form."""
    source = preset_gemv_source(256, 11008)
    assert re.search(r"__shared__ alignas\(\d+\) uint4 x\w*_shared_ptr\[1760\]", source)
    assert ", 343)" in source and "mlcgen_q4_word_dot(" in source


@pytest.mark.parametrize("vectors, unroll", [(448, 14), (128, 4), (96, 3), (344, 11), (152, 5), (28, 1)])
def test_gemv_rows_take_as_few_rounds_of_steps_as_tile_them(vectors, unroll):
    """The cuda preset unrolls up to 16 steps: rows the 32 lanes divide take the most steps that
    tile them (448 vectors: 14 a lane, one round); padded rows spread their steps evenly over as
    few rounds (344 -> 352 vectors, one round of 11; 152 -> 160), not past an eighth of padding
    (Qwen2-0.5B's 28 groups pad to 32)."""
    from mlcgen.targets import cuda
    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    assert DequantGEMV(cuda.PRESETS["sm_90"].gemv)._packed_knobs(4096, vectors).unroll == unroll


def test_cuda_builds_offload_prefill_matmuls_to_cublas(builds):
    """The cuda target adds a `prefill_cublas` entry: each q4 matmul over the prompt's tokens is one
    call of the cuBLAS plugin, given the weight's dequantize kernel (a thread per packed word, one
    16-byte store); decode keeps its GEMVs; the manifest names the entry for the runtime."""
    from mlcgen.targets import cuda

    p = plan(builds.checkpoint("gqa_tied"), "q4f16_1", "cuda")
    target = p.target_module.tvm_target(p.preset)
    mod = pipeline.run(export_ir(p, target), p.target_module, target)
    library_prefill = mod[cuda.CUBLAS_ENTRY].script()
    slice_rows = re.findall(r'"mlcgen.cublas.q4_matmul_nt", \w+, \w+, \w+, dequantize_rows\d*, (\d+), \w+\)', library_prefill)
    assert len(slice_rows) == 2 * 4  # layers x (qkv, o, gate/up, down), each weight in one slice (all small):
    assert set(slice_rows) == {"128", "64", "192"}  # qkv, o and down, gate/up rows
    kernels = {k["name"]: k["calls"] for k in pipeline.entry_kernel_traffic(mod, cuda.CUBLAS_ENTRY)}
    assert [calls for name, calls in kernels.items() if "q4_matmul" in name] == [1]  # the last token's lm_head
    dequantize = [f.script() for gv, f in mod.functions_items() if gv.name_hint.startswith("dequantize_rows")]
    assert len(dequantize) == 4 and all("T.vectorized(8)" in s and 'thread="threadIdx.x"' in s for s in dequantize)
    assert "mlcgen.cublas" not in mod["prefill"].script() + mod["decode"].script()
    assert p.manifest["target"]["library_prefill"] == "prefill_cublas"


@pytest.mark.parametrize("n, k, rows", [(12288, 4096, 4096), (22016, 4096, 3712), (4096, 11008, 1408), (28672, 4096, 4096),
                                         (4096, 4096, 4096), (192, 64, 192)])
def test_prefill_weight_slices_are_the_fewest_of_the_preset_size(n, k, rows):
    """The 7B / 8B weights in the fewest row slices of about 32 MiB of fp16, whole GEMM tiles of
    128 rows but the last (7B gate/up: 6 slices, 5 x 3712 + 3456 rows)."""
    from mlcgen.compiler.passes import _slice_rows
    from mlcgen.targets import cuda

    slice_bytes = cuda.PRESETS["sm_90"].cublas_slice_bytes
    assert _slice_rows(n, 2 * k, slice_bytes) == rows
    assert -(-n // rows) == max(1, -(-n * 2 * k // slice_bytes)) and (rows % 128 == 0 or rows == n)


def test_cublas_plugin_compiles_registers_and_checks_its_arguments():
    """Here without a GPU: the plugin compiles against the wheels' headers (cuBLAS resolved lazily,
    never called) and refuses tensors that are not float16 on a CUDA device. Its GEMMs run on the
    GPU machine (benchmarks/cuda_check.py, against the CPU build's logits)."""
    import ctypes
    import os

    import numpy as np
    import tvm
    import tvm_ffi

    from mlcgen.runtime import cublas

    ctypes.CDLL(str(cublas.build_plugin()), mode=os.RTLD_LAZY | os.RTLD_GLOBAL)
    matmul = tvm_ffi.get_global_func(cublas.GEMM)
    x, out = (tvm.runtime.tensor(np.zeros(shape, "float16")) for shape in ((4, 64), (4, 6)))
    q_weight, q_scale = tvm.runtime.tensor(np.zeros((6, 8), "uint32")), tvm.runtime.tensor(np.zeros((6, 2), "float16"))
    with pytest.raises(ValueError, match="x and out must be contiguous float16 CUDA tensors"):
        matmul(x, q_weight, q_scale, lambda *args: None, 2, out)
