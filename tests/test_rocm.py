"""ROCm builds, cross-compiled here (no AMD GPU): the code objects are read and checked.

Occupancy floors: decode is memory-bound, so each SIMD needs several waves in flight to hide DRAM
latency. For the decode matmuls and the split-KV decode attention (schedules/split_kv_decode.py)
we ask for at least 4 waves per SIMD: the matmuls reach the maximum; attention, with 4 rows of K
and V in flight per lane and a query head's output in registers, takes 99 VGPRs on gfx90a (4
waves) and 100 on gfx1100 for the test model (session 28), so a register blow-up is caught. Its
merge kernel holds up to MERGE_LOADS splits' outputs in registers: 106 VGPRs on gfx90a.
"""

import dataclasses
import json
import subprocess
import sys

import pytest
import tvm

from mlcgen.compiler.quantization import get_quantization
from mlcgen.errors import ConfigError
from mlcgen.targets import amdgpu_inspect, rocm

from conftest import gemv_func

ARCHS = {"gfx1100": 32, "gfx90a": 64}
ATTENTION_DECODE = ("batch_decode_paged_kv_kernel", "batch_decode_paged_kv_kernel_1")  # split-KV partials, merge


@pytest.fixture(scope="module", params=list(ARCHS))
def rocm_build(request, builds):
    arch = request.param
    return arch, builds.dist("gqa_tied", "q4f16_1", target=f"rocm:{arch}")


def decode_gemv_kernels(dist, kernels):
    """Device kernels of the decode step's quantized matmuls (PrimFunc name + "_kernel")."""
    names = {k["name"] for k in json.loads((dist / "manifest.json").read_text())["decode_kernels"] if "q4_matmul" in k["name"]}
    found = [k for k in kernels if k["kernel"].removesuffix("_kernel") in names]
    assert len(found) == len(names) >= 4
    return found


def test_code_object_arch_and_wave_size(rocm_build):
    arch, dist = rocm_build
    code_arch, kernels = amdgpu_inspect.kernel_resources(dist / rocm.CODE_OBJECT)
    assert code_arch == arch
    report = amdgpu_inspect.inspect(dist)
    assert report["arch"] == arch and len(report["kernels"]) > 10
    assert {k["wave"] for k in report["kernels"]} == {ARCHS[arch]}


def test_no_scratch_and_occupancy_in_decode_kernels(rocm_build):
    arch, dist = rocm_build
    kernels = amdgpu_inspect.inspect(dist)["kernels"]
    attention = [k for k in kernels if k["kernel"] in ATTENTION_DECODE]
    assert len(attention) == 2
    for k in decode_gemv_kernels(dist, kernels) + attention:
        assert k["scratch"] == 0, k
        assert k["waves_per_simd"] >= 4, k


def test_inspect_cli_prints_table_and_labelled_projection(rocm_build):
    arch, dist = rocm_build
    out = subprocess.run([sys.executable, "-c", "from mlcgen.cli import main; main()", "inspect", str(dist)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ATTENTION_DECODE[0] in out.stdout and "waves/SIMD" in out.stdout
    assert "PROJECTED, not measured" in out.stdout and "bandwidth bound" in out.stdout
    projection = amdgpu_inspect.inspect(dist)["projection"]
    row = projection["contexts"][128]
    assert row["projected_tok_s"] == pytest.approx(row["bound_tok_s"] * amdgpu_inspect.GEMV_EFFICIENCY)
    assert row["bound_tok_s"] == pytest.approx(rocm.PRESETS[arch].bandwidth_gbs * 1e9 / row["bytes_per_token"])


@pytest.mark.parametrize("arch", list(ARCHS))
def test_prefill_attention_takes_the_presets_blocks(builds, arch):
    """TVM's prefill-attention kernels regenerated for ~4 blocks per CU (schedules/prefill_attention.py):
    the ROCm schedule passes' own prefill pass, on the exported model (the other schedule rules,
    tens of seconds of compiling, have their own tests)."""
    from mlcgen.compiler.build import export_ir, plan

    p = plan(builds.checkpoint("gqa_tied"), "q4f16_1", f"rocm:{arch}")
    target = p.target_module.tvm_target(p.preset)
    (prefill_pass,) = [ps for ps in rocm.schedule_passes(target) if ps.info.name == "UsePrefillBlocks"]
    with target:
        mod = prefill_pass(export_ir(p, target))
    per_kv_head = rocm.PRESETS[arch].prefill_blocks // 2  # gqa_tied has 2 KV heads
    prefill = [f.script() for gv, f in mod.functions_items() if gv.name_hint in ("batch_prefill_ragged_kv", "batch_prefill_paged_kv")]
    assert len(prefill) == 2 and all(f'T.thread_binding({per_kv_head}, thread="blockIdx.x")' in script for script in prefill)


def test_plain_rocm_target_says_which_arch(builds):
    dist = builds.dist("gqa_tied", "q4f16_1", target="rocm")
    target = json.loads((dist / "manifest.json").read_text())["target"]
    local = rocm.local_gpu_arch()
    expected = local if local in rocm.PRESETS else rocm.FALLBACK_PRESET
    assert target["name"] == f"rocm:{expected}" and expected in target["preset_reason"]


def test_inspect_refuses_a_cpu_build(tiny_dist):
    with pytest.raises(Exception, match="reads AMD builds"):
        amdgpu_inspect.inspect(tiny_dist)


def test_missing_toolchain_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ROCM_PATH", str(tmp_path))  # no amdgcn/bitcode there
    with pytest.raises(ConfigError, match="needs the ROCm device libraries .* scripts/install-system-deps.sh"):
        rocm.ensure_toolchain()


def test_fused_add_rms_norm_is_one_kernel(rocm_build):
    """Our schedule rule puts the add, the reduction and the norm in one kernel (the fallback
    schedule made three)."""
    _, dist = rocm_build
    names = [k["kernel"] for k in amdgpu_inspect.inspect(dist)["kernels"] if k["kernel"].startswith("fused_add_rms_norm")]
    assert names and all(n.endswith("_kernel") for n in names), names


def test_rope_angles_lose_their_whole_turns_before_the_sine(rocm_build):
    """v_sin_f32 / v_cos_f32, which LLVM makes of a sine on AMD GPUs, take at most 256 turns: RoPE's
    first pair passes that at 1608 tokens. The rope_append kernel rounds the angle's turns away
    first (compiler/kv_cache.py one_turn): v_rndne_f32, which neither arch's code had before (gfx90a's
    LLVM adds a v_fract_f32 of its own; gfx11's nothing)."""
    arch, dist = rocm_build
    text = subprocess.run([amdgpu_inspect._llvm_tool("llvm-objdump"), "-d", f"--mcpu={arch}", str(dist / rocm.CODE_OBJECT)],
                          capture_output=True, text=True, check=True).stdout
    kernel = text[text.index("<rope_append_kernel>:"):]
    kernel = kernel[:kernel.find("\n\n")]
    assert "v_sin_f32" in kernel and "v_cos_f32" in kernel
    assert "v_rndne_f32" in kernel  # the turns rounded (the cosine and the sine of an angle share it)


def gemv_code_object(arch, knobs, func, path):
    """The q4 GEMV `func` (conftest.gemv_func, or the int8-activation form) scheduled with `knobs`
    for `arch`, as an HSA code object."""
    from tvm.s_tir import dlight as dl

    from mlcgen.targets.schedules.dequant_gemv import DequantGEMV

    with rocm.tvm_target(arch):
        mod = dl.ApplyDefaultSchedule(DequantGEMV(knobs))(tvm.IRModule({"main": func}))
    assert mod["main"].attrs.get("tirx.is_scheduled")
    return code_object(mod, arch, path)


def code_object(mod, arch, path):
    """`mod` compiled for `arch`, its HSA code object written to `path`."""
    with rocm.device_code() as objects:
        tvm.compile(mod, rocm.tvm_target(arch))
    path.write_bytes(objects[rocm.CODE_OBJECT])
    return path


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("k", [4096, 14336])  # Llama-2-7B q/k/v/o/gate/up, Llama-3-8B down (448 groups per row)
def test_decode_gemv_computes_in_packed_fp16_pairs_with_dot_instructions(arch, k, tmp_path):
    """The presets' packed_fp16 GEMV: v_dot2_f32_f16 for every pair of weights, packed fp16
    subtracts, and at most 60% of the float32 form's vector ALU instructions (docs/rocm.md: on the
    MI210 the float32 form needs more ALU than its bandwidth leaves room for); no scratch."""
    preset = rocm.PRESETS[arch].gemv
    assert preset.packed_fp16
    mix, resources = {}, {}
    for packed in (True, False):
        path = gemv_code_object(arch, dataclasses.replace(preset, packed_fp16=packed), gemv_func(4096, k), tmp_path / f"{packed}.hsaco")
        _, kernels = amdgpu_inspect.kernel_resources(path)
        (name, resources[packed]), = kernels.items()
        mix[packed] = amdgpu_inspect.instruction_mix(path, arch)[name]
    assert mix[True]["v_dot"] > 0 and mix[True]["v_pk"] > 0 and mix[False]["v_dot"] == 0
    # per unrolled loop body: 16 dot2 per group and row, as many packed subtracts
    assert mix[True]["v_dot"] % 16 == 0 and mix[True]["v_pk"] >= mix[True]["v_dot"]
    assert mix[True]["valu"] <= 0.6 * mix[False]["valu"], (mix[True], mix[False])
    assert resources[True]["private_segment_fixed_size"] == 0


@pytest.mark.parametrize("arch", list(ARCHS))
def test_int8_activation_gemv_and_norm_use_integer_dot_instructions(arch, tmp_path):
    """--int8-activations on AMD (compiled and inspected; its numerics run on lavapipe and CUDA):
    the decode GEMV takes each scale group in 8 integer dot products (v_dot4c_i32_i8 on gfx90a,
    v_dot4_i32_iu8 on gfx11) with fewer vector ALU instructions than the packed fp16 form, and
    the int8-writing add + RMSNorm compiles; neither spills to scratch."""
    from mlcgen.compiler import int8_activations

    preset = rocm.PRESETS[arch]
    int8 = int8_activations.matmul_func(get_quantization("q4f16_1"), 4096, 4096, "float16")
    norm = int8_activations.add_rms_norm_quantize_kernel(4096, 1e-5, preset.max_threads).with_attr("global_symbol", "main")
    objects = {"packed": gemv_code_object(arch, preset.gemv, gemv_func(4096, 4096), tmp_path / "packed.hsaco"),
               "int8": gemv_code_object(arch, preset.gemv, int8, tmp_path / "int8.hsaco"),
               "norm": code_object(tvm.IRModule({"main": norm}), arch, tmp_path / "norm.hsaco")}
    mix = {}
    for name, path in objects.items():
        _, kernels = amdgpu_inspect.kernel_resources(path)
        assert kernels["main_kernel"]["private_segment_fixed_size"] == 0
        mix[name] = amdgpu_inspect.instruction_mix(path, arch)["main_kernel"]
    dot4 = "v_dot4_i32_iu8" if arch.startswith("gfx11") else "v_dot4c_i32_i8"  # gfx90a: the accumulating form
    int8_dots = sum(count for name, count in mix["int8"].items() if name.startswith(dot4))
    assert mix["int8"]["v_dot"] > 0 and mix["int8"]["v_dot"] % 8 == 0 and int8_dots == mix["int8"]["v_dot"], mix["int8"]
    assert mix["int8"]["valu"] < mix["packed"]["valu"], (mix["int8"], mix["packed"])


@pytest.mark.parametrize("arch", list(ARCHS))
def test_rows_the_lanes_do_not_divide_are_padded_into_the_packed_form(arch, tmp_path):
    """Llama-2-7B's down projection: 344 groups per row, which 32 or 64 lanes cannot share in whole
    steps (tensorize takes no partial step): the reduction is padded, and the row still computes
    in packed pairs with dot instructions, without scratch (results: test_vulkan.py, 43 groups)."""
    path = gemv_code_object(arch, rocm.PRESETS[arch].gemv, gemv_func(4096, 11008), tmp_path / "down.hsaco")
    _, kernels = amdgpu_inspect.kernel_resources(path)
    mix = amdgpu_inspect.instruction_mix(path, arch)["main_kernel"]
    assert mix["v_dot"] > 0 and mix["v_dot"] % 16 == 0 and mix["b128" if arch == "gfx1100" else "dwordx4"] > 0
    assert kernels["main_kernel"]["private_segment_fixed_size"] == 0


def test_gfx90a_prefill_matmuls_run_on_matrix_cores(builds):
    """The prefill matmuls (a batch of tokens) of the gfx90a build are MFMA kernels, without
    scratch; the decode GEMVs stay on the vector units."""
    dist = builds.dist("gqa_tied", "q4f16_1", target="rocm:gfx90a")
    kernels = {k["kernel"]: k for k in amdgpu_inspect.inspect(dist)["kernels"]}
    decode = {k["kernel"] for k in decode_gemv_kernels(dist, kernels.values())}
    prefill = [k for name, k in kernels.items() if "q4_matmul" in name and name not in decode]
    assert len(prefill) >= 4
    for k in prefill:
        assert k["mix"].get("v_mfma", 0) > 0 and k["scratch"] == 0 and k["waves_per_simd"] >= 2, k
    assert all(kernels[name]["mix"].get("v_mfma", 0) == 0 for name in decode)


def test_mfma_operand_layouts_compose_to_the_matmul():
    """The register layouts the MFMA rule uses, against v_mfma_f32_16x16x16f16's operand layout as
    AMD's CDNA2 ISA guide tabulates it (lane l, element v: A[l % 16][4 (l / 16) + v],
    B[4 (l / 16) + v][l % 16], D[4 (l / 16) + v][l % 16]). Simulated in numpy: TVM's loaders fill
    the registers, the hardware's product is taken on the matrices the registers hold, TVM's
    store writes D back; the result must be A @ Bt.T for the [N, K] weight tile Bt."""
    import numpy as np
    from tvm.s_tir.tensor_intrin import rocm as amd

    from mlcgen.targets.schedules.mfma_matmul import lane_of

    lanes, elems = range(64), range(4)
    hw_a = {(l, v): (l % 16, 4 * (l // 16) + v) for l in lanes for v in elems}  # (row i, col k)
    hw_b = {(l, v): (4 * (l // 16) + v, l % 16) for l in lanes for v in elems}  # (row k, col j)
    hw_d = {(l, v): (4 * (l // 16) + v, l % 16) for l in lanes for v in elems}  # (row i, col j)
    for (l, v), (i, k) in hw_a.items():
        assert lane_of(i, k) == (l, v)  # the compute description's A map
        assert tuple(map(int, amd.thread_id_shared_access_64x4_to_16x16_layout_A(l, v))) == (i, k)  # TVM's A loader
    for (l, v), (k, j) in hw_b.items():
        assert lane_of(j, k) == (l, v)  # B held transposed: Bt[j][k]
        assert tuple(map(int, amd.thread_id_shared_access_64x4_to_16x16_layout_A(l, v))) == (j, k)  # TVM's transposed B loader
    for (l, v), (i, j) in hw_d.items():
        assert lane_of(j, i) == (l, v)  # the accumulator's map
        assert ((l // 16) * 4 + v, l % 16) == (i, j)  # TVM's store: C[(tx // 16) * 4 + v, tx % 16] = C_warp[tx, v]

    rng = np.random.default_rng(0)
    a, bt = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
    a_regs = {lv: a[amd.thread_id_shared_access_64x4_to_16x16_layout_A(*lv)] for lv in hw_a}
    b_regs = {lv: bt[amd.thread_id_shared_access_64x4_to_16x16_layout_A(*lv)] for lv in hw_b}
    a_hw, b_hw = np.zeros((16, 16)), np.zeros((16, 16))
    for lv, value in a_regs.items():
        a_hw[hw_a[lv]] = value
    for lv, value in b_regs.items():
        b_hw[hw_b[lv]] = value
    d_hw = a_hw @ b_hw
    c = np.zeros((16, 16))
    for l in lanes:
        for v in elems:
            c[(l // 16) * 4 + v, l % 16] = d_hw[hw_d[(l, v)]]
    assert np.allclose(c, a @ bt.T)
