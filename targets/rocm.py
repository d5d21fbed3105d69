"""ROCm: AMD GPUs, cross-compiled. No AMD GPU exists on the machines here: libraries are built and
inspected, never run (README: status).

Toolchain: the TVM wheel's LLVM emits AMDGPU code; linking needs ld.lld and the ROCm device
bitcode libraries, which Debian packages (rocm-device-libs, lld-19; scripts/install-system-deps.sh).
They are found without the user setting ROCM_PATH.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from . import gpu
from .schedules.dequant_gemv import GemvKnobs
from .schedules.split_kv_decode import AttentionKnobs

DEVICE = "rocm"


@dataclass(frozen=True)
class Preset:
    """Facts and knobs of one card; each value's source is in PRESETS' comments."""

    mcpu: str
    card: str
    wave_size: int
    compute_units: int
    bandwidth_gbs: float
    memory_gib: int
    clock_ghz: float  # peak engine clock: with 64 VALU lane operations per CU per clock, the ALU rate
    max_threads: int = 1024  # per workgroup: the hardware limit on both CDNA2 and RDNA3
    lds_bytes: int = 65536  # LDS per workgroup: 64 KiB on both
    gemv: GemvKnobs = GemvKnobs()  # decode GEMV knobs: set per card in PRESETS
    attention: AttentionKnobs = AttentionKnobs()  # decode attention knobs: set per card in PRESETS
    # TVM's prefill attention: at least this many blocks (schedules/prefill_attention.py), ~4 per CU
    # where TVM gives 16 per KV head (Llama-3-8B: 128). Measured on the H200 (the 8B's prefill
    # attention in half the time, docs/benchmarks.md), not on AMD cards.
    prefill_blocks: int | None = None
    mfma: bool = False  # prefill matmuls on the matrix cores (schedules/mfma_matmul.py)


PRESETS = {
    # RX 7900 XTX, RDNA3 (Navi 31): 96 CUs, 24 GB GDDR6 at 960 GB/s, 2.5 GHz boost (AMD spec sheet). RDNA3 runs
    # wave32 natively and LLVM compiles gfx11 as wave32: TVM's rocm default of 64 would make
    # warp-level reductions span two hardware waves, so the target must say 32 (checked in the
    # code object's .wavefront_size by the tests).
    # Decode GEMV: one wave32 per weight row (the row's sum stays in one wave: DPP, no LDS); 4
    # packed words per lane = global_load_b128, the widest load; 4 rows = 128 threads per block;
    # 2 rows per lane share its activation loads (+13% on the H100 for the same wave32 kernel:
    # docs/benchmarks.md; not measured on RDNA3).
    # Decode attention: 16 lanes x global_load_b128 per head_dim-128 row, so a row's dot product
    # reduces within half a wave32 (DPP) and each wave takes 2 rows; 4 waves per block; ~4 blocks per CU.
    "gfx1100": Preset("gfx1100", "Radeon RX 7900 XTX", 32, 96, 960.0, 24, 2.5,
                      gemv=GemvKnobs(threads_per_row=32, rows_per_block=4, vector_words=4, unroll=2, rows_per_thread=2, packed_fp16=True),
                      attention=AttentionKnobs(vector=8, threads=128, unroll=4, blocks=96 * 4), prefill_blocks=96 * 4),
    # Instinct MI210, CDNA2: 104 CUs, 64 GB HBM2e at 1.6 TB/s, 1.7 GHz peak (AMD spec sheet); wave64, MFMA.
    # Decode GEMV: one wave64 per row (as above, for CDNA's 64 lanes), global_load_dwordx4; 4 rows
    # = 256 threads = one wave per SIMD of a CU; 2 rows per lane as on gfx1100.
    # Prefill: v_mfma_f32_16x16x16f16 (181 TFLOP/s fp16 on the MI210 against 45 for packed fp32 FMAs).
    # Decode attention: 16 lanes x global_load_dwordx4 per row, 4 rows per wave64; 4 waves per
    # block = one per SIMD; ~4 blocks per CU.
    "gfx90a": Preset("gfx90a", "Instinct MI210", 64, 104, 1638.4, 64, 1.7,
                     gemv=GemvKnobs(threads_per_row=64, rows_per_block=4, vector_words=4, unroll=2, rows_per_thread=2, packed_fp16=True),
                     attention=AttentionKnobs(vector=8, threads=256, unroll=4, blocks=104 * 4), prefill_blocks=104 * 4,
                     mfma=True),
}
# Without an AMD GPU present, `--target rocm` builds for the RX 7900 XTX: the consumer card the
# product is for first.
FALLBACK_PRESET = "gfx1100"


def local_gpu_arch() -> str | None:
    """gfxNNNN of the first AMD GPU the kernel driver lists, if any (no ROCm install needed)."""
    for props in sorted(Path("/sys/class/kfd/kfd/topology/nodes").glob("*/properties")):
        for line in props.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "gfx_target_version" and int(value):
                v = int(value)  # e.g. 110000 -> gfx1100, 90010 -> gfx90a
                major, minor, step = v // 10000, v // 100 % 100, v % 100
                return f"gfx{major}{minor:x}{step:x}" if major < 10 else f"gfx{major}{minor}{step:x}"
    return None


def default_preset() -> tuple[str, str]:
    """(preset, why): the local GPU's arch when one is present and known, else the fallback."""
    local = local_gpu_arch()
    if local in PRESETS:
        return local, f"the local AMD GPU is {local}"
    if local:
        return FALLBACK_PRESET, f"the local AMD GPU {local} has no preset; building for {FALLBACK_PRESET} (choose rocm:{'|'.join(PRESETS)})"
    return FALLBACK_PRESET, f"no AMD GPU here; building for the default {FALLBACK_PRESET} ({PRESETS[FALLBACK_PRESET].card}); rocm:gfx90a builds for the MI210"


def llvm_tool(name: str) -> str | None:
    """The newest Debian LLVM's copy of a tool (an older default one may not know gfx1100), else
    the one on PATH, else None."""
    versioned = sorted(Path("/usr/lib").glob(f"llvm-*/bin/{name}"), key=lambda p: int(p.parts[3].split("-")[1]), reverse=True)
    return str(versioned[0]) if versioned else shutil.which(name)


def ensure_toolchain() -> None:
    """Point TVM at the device bitcode and ld.lld, or say what to install."""
    if not os.environ.get("ROCM_PATH"):
        for root in ("/opt/rocm", "/usr/lib/x86_64-linux-gnu"):
            if Path(root, "amdgcn", "bitcode").is_dir():
                os.environ["ROCM_PATH"] = root
                break
    if not shutil.which("ld.lld") and llvm_tool("ld.lld"):
        os.environ["PATH"] = f"{Path(llvm_tool('ld.lld')).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    missing = []
    if not os.environ.get("ROCM_PATH") or not Path(os.environ["ROCM_PATH"], "amdgcn", "bitcode").is_dir():
        missing.append("the ROCm device libraries (amdgcn/bitcode)")
    if not shutil.which("ld.lld"):
        missing.append("ld.lld")
    if missing:
        raise ConfigError(f"building for ROCm needs {' and '.join(missing)}: run scripts/install-system-deps.sh "
                          "(Debian: apt-get install rocm-device-libs lld-19 llvm-19)")


def tvm_target(preset: str):
    import tvm
    from tvm.target import Target

    ensure_toolchain()
    tvm.tirx.register_tir_pipeline(TIR_PIPELINE, _tir_pipeline)
    p = PRESETS[preset]
    return Target({"kind": "rocm", "mcpu": p.mcpu, "thread_warp_size": p.wave_size, "max_num_threads": p.max_threads,
                   "max_threads_per_block": p.max_threads, "max_shared_memory_per_block": p.lds_bytes},
                  host={"kind": "llvm"})


QUANTIZATIONS, QUANTIZATION_NOTE = gpu.QUANTIZATIONS, gpu.QUANTIZATION_NOTE
TIR_PIPELINE = "mlcgen_rocm"


INT8_ACTIVATIONS = True  # --int8-activations: v_dot4_i32_i8 / v_dot4_i32_iu8 (compiled and inspected, not run: no AMD GPU)


# hipBLAS could take the prefill matmuls as cuBLAS does on CUDA; not built: no AMD GPU to measure it on
def graph_passes(target, int8_activations: bool = False) -> list:
    preset = PRESETS[str(target.attrs["mcpu"])]
    return gpu.decode_passes(preset.gemv, preset.max_threads, int8_activations)


def schedule_passes(target) -> list:
    preset = PRESETS[str(target.attrs["mcpu"])]
    return gpu.schedule_passes(target, preset.gemv, preset.attention, matrix_cores=preset.mfma,
                               prefill_blocks=preset.prefill_blocks)


def _tir_pipeline():
    """TVM's s_tir lowering with two changes for the MFMA kernels' register ("warp") buffers:
    - no TIR common-subexpression elimination: it hides the lane index in a temporary, and
      LowerWarpMemory then cannot find its coefficient (LLVM eliminates the same expressions later);
    - LowerWarpMemory once per warp buffer: TVM 0.27's pass lowers only the first one of a
      statement sequence (it takes the rest as that buffer's body without visiting them), and
      an MFMA kernel has three (A, B, the accumulator): two more runs before TVM's own."""
    import tvm
    from tvm.s_tir import pipeline

    lower, host, device = pipeline.default_s_tir_pipeline()

    @tvm.transform.module_pass(opt_level=0)
    def lower_without_cse(mod, ctx):
        with tvm.transform.PassContext(config={**ctx.config, "tirx.disable_cse_tir": True}):
            return lower(mod)

    def device_passes():
        return tvm.transform.Sequential([tvm.tirx.transform.LowerWarpMemory()] * 2 + [device()])

    return lower_without_cse, host, device_passes


CODE_OBJECT = "kernels.hsaco"


@contextmanager
def device_code():
    """Collects the HSA code object the build links, to be kept beside the library (for
    `mlcgen inspect`): {file name: bytes}."""
    import tvm_ffi
    from tvm.support import rocm as tvm_rocm

    objects = {}

    def link(obj):
        code = tvm_rocm.callback_rocm_link(obj)
        objects[CODE_OBJECT if not objects else f"kernels-{len(objects)}.hsaco"] = bytes(code)
        return code

    tvm_ffi.register_global_func("tvm_callback_rocm_link", link, override=True)
    try:
        yield objects
    finally:
        tvm_ffi.register_global_func("tvm_callback_rocm_link", tvm_rocm.callback_rocm_link, override=True)
