"""CUDA (NVIDIA): where this project measures its GPU schedules before retargeting them to AMD.

The library stores CUDA C; kernels are compiled by nvcc when it is loaded (runtime/cuda.py: an
on-disk cache keyed by source hash and arch makes the second load compile nothing). It holds no
CUDA graphs (TVM's RewriteCUDAGraph stops at every KV-cache call): the engine captures whole
decode steps instead (runtime/cuda_graph.py).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from ..compiler.quantization import GroupQuant4
from . import gpu
from .schedules.dequant_gemv import GemvKnobs
from .schedules.split_kv_decode import AttentionKnobs

DEVICE = "cuda"


@dataclass(frozen=True)
class Preset:
    arch: str
    max_threads: int = 1024  # per block, all current NVIDIA GPUs
    shared_bytes: int = 49152  # static shared memory per block without opt-in
    # Decode GEMV: a warp (32 lanes) per weight row, so the row's sum is a pure shuffle reduction;
    # 4 packed words = one 128-bit load per lane per step, up to 16 steps unrolled (all of a lane's
    # steps at once in every Llama-shape row: 4 at K = 4096, 11 in the 7B down projection, 14 in
    # 8B's); 2 rows per lane share its activation loads, 4 warps per block; the activation staged in
    # shared memory; each word's products summed in packed fp16 pairs (HFMA2) before the float32
    # sum (schedules/packed_dot.py). From the sweeps in benchmarks/gemv_efficiency.py on an H200
    # (docs/benchmarks.md): the four 7B layer matmuls 38.0 us, 39.0 with 4 steps unrolled (the down
    # projections 9.2 and 10.8 us against 10.1 and 12.8), 43.8-44.0 before the fp16 pairs were
    # packed instructions, 52.4 with float32 products, 55.9 unstaged and 62.5 for the float32 form;
    # lm_head 20.2 against 27.2. Re-swept in sessions 18 and 20: 16 or 64 lanes a row, 1, 2 or 8
    # warps a block, 1 row a lane were all slower (40.4-48.8 us);
    # 8-word loads, 4 rows per lane and weights through shared memory (cp.async) were slower before.
    # The norm before each q/k/v projection folded into the GEMVs around it (fold_rms_norm; the
    # q/k/v GEMV normalizes its staged activation): 54 and 41 us less kernel time a 7B and 8B step,
    # decode +0.3-4.6% in 12 same-call pairs; the norm before gate/up folded too cost its SwiGLU
    # GEMV more than the norm kernel (H200, docs/benchmarks.md, session 25).
    # From 16384 rows (gate/up, lm_head) a lane's weights and scales are strong loads at its start
    # (dequant_gemv._early_loads): 7B gate/up + SiLU 487 -> 461 us a step, 8B 602 -> 569, lm_heads
    # 3-5% less; the one-wave o and down GEMVs and the q/k/v ones (a folded norm) took 6-33% more
    # with them (H200, session 29).
    gemv: GemvKnobs = GemvKnobs(threads_per_row=32, rows_per_block=4, vector_words=4, unroll=16, rows_per_thread=2,
                                packed_fp16=True, stage_activation=True, fp16_products=True, fold_rms_norm=True,
                                fold_into_swiglu=False, early_loads_from_rows=16384)
    # Decode attention: 16 lanes x 128-bit loads per head_dim-128 row (2 rows per warp), 4 warps
    # per block; ~4 blocks per SM of an H100/H200 (132 SMs) for an MHA model, twice the (query head,
    # split) pairs for grouped (GQA) models (session 19 sweep, benchmarks/attention_speed.py,
    # docs/benchmarks.md: Llama-3-8B shape 5.8 / 8.8 / 16.1 us a call at 128 / 1024 / 4096 tokens
    # against 5.9 / 9.1 / 22.3 with 528 pairs).
    # Up to 384 rows (6 pages) an MHA head is read by one block of 512 threads, which writes the
    # output itself, with no merge kernel (session 26, benchmarks/attention_speed.py, us a call at
    # 128 / 256 / 512 tokens): 7B 3.8-4.2 / 5.4-5.5 / 9.8-10.5 against 5.1 / 6.5 / 8.0 split; a 7B
    # step at context 128 57-62 us less kernel time, decode +4.8% and +1.2% in two same-call
    # pairs (docs/benchmarks.md). Llama-3-8B's 8 blocks (one per KV head) are slower than its
    # splits at every length (8.1-8.7 us at 128 against 6.4).
    # The split kernel's rows come through shared memory by cp.async, the next step's in flight while
    # a lane works on this one's (K and V loads into registers: ptxas issued V's only after the
    # scores), 4 rows a step, 2 for grouped models; rows past a split masked, not branched around.
    # Same sweep (session 27, us a call at 128 / 1024 / 4096 tokens): Llama-3-8B shape 5.0 / 8.6 /
    # 13.0 against 5.7 / 8.9 / 16.4 before; Llama-2-7B's split kernel 10.1 / 22.7-23.2 at 1024 /
    # 4096 against 9.6 / 22.7, its whole kernel with 4 rows a step 132 us a decode step at context
    # 128 against 147 (8 rows: 161 once masked). End to end (H200, two calls, each beside a base
    # built from 8b28678, tok/s at 128 / 1024 / 4096): 8B 548.7-556.6 / 518.8-525.0 / 484.1-489.4
    # against 540.4-544.5 / 513.6-525.8 / 463.1-463.6; 7B 605.8-615.8 / 535.2-540.1 / 441.9-447.1
    # against 602.3-614.4 / 547.1-552.8 / 443.0-443.7 (docs/benchmarks.md).
    # A GQA block's 4 query heads merge their row slots at once, a slot each (session 28, same sweep):
    # Llama-3-8B 4.7 / 7.3 / 11.8 us a call against 5.0 / 8.6 / 13.0, with the merge kernel's loads in
    # one round (all targets); 8B decode +2.1-3.6% at 1024 and 4096 tokens in 3 of 4 same-call pairs.
    # RoPE and the KV append inside the decode attention (session 31): 7B 668.8 tok/s at 128, 8B 607.7.
    attention: AttentionKnobs = AttentionKnobs(vector=8, threads=128, unroll=4, blocks=528, grouped_blocks=1056, grouped_unroll=2,
                                               whole_rows=384, whole_threads=512, grouped_whole_rows=0, async_copy=True,
                                               parallel_merge=True, fuse_rope_append=True)
    # Prefill attention (TVM's kernels): at least this many thread blocks, ~4 per SM, where TVM
    # gives 16 per KV head (Llama-3-8B: 128) (schedules/prefill_attention.py).
    prefill_blocks: int = 512
    # Fused add + RMSNorm: threads per row (schedules/add_rms_norm.py). 64 calls a step, H200,
    # CUPTI (cuda_speed.py, two runs each, one call; session 23): 7B 121.6 us a step with 512,
    # 132.3-132.5 with 256, 129.0 with 1024; 8B 118.7-118.8, 129.0, 127.8.
    norm_threads: int = 512
    # Prefill through cuBLAS: each q4 weight dequantized to fp16 in row slices of at most this many
    # bytes (one scratch buffer, runtime/cublas/plugin.cc), then a cuBLAS GEMM per slice (wgmma on
    # Hopper, which TVM 0.27's TIR cannot emit).
    cublas_slice_bytes: int = 32 << 20


PRESETS = {
    "sm_90": Preset("sm_90"),  # H100 / H200 (Hopper): the GPU machine here
    "sm_80": Preset("sm_80"),  # A100 (Ampere)
}


def default_preset() -> tuple[str, str]:
    return "sm_90", "the GPU machine here is Hopper (H100/H200)"


def tvm_target(preset: str):
    from tvm.target import Target

    p = PRESETS[preset]
    return Target({"kind": "cuda", "arch": p.arch, "max_num_threads": p.max_threads, "thread_warp_size": 32,
                   "max_shared_memory_per_block": p.shared_bytes}, host={"kind": "llvm"})


QUANTIZATIONS, QUANTIZATION_NOTE = gpu.QUANTIZATIONS, gpu.QUANTIZATION_NOTE
TIR_PIPELINE = "default"


CUBLAS_ENTRY = "prefill_cublas"


INT8_ACTIVATIONS = True  # --int8-activations: __dp4a (compiler/int8_activations.py)


def graph_passes(target, int8_activations: bool = False) -> list:
    from ..compiler.passes import offload_prefill_matmuls
    from ..runtime.cublas import GEMM

    preset = PRESETS[str(target.attrs["arch"])]
    return [offload_prefill_matmuls(CUBLAS_ENTRY, GEMM, preset.cublas_slice_bytes),
            *gpu.decode_passes(preset.gemv, preset.max_threads, int8_activations)]


def runtime_facts(preset: str, scheme) -> dict:
    """Recorded in the manifest: decode steps run as whole-step CUDA graphs; and the prefill entry
    the runtime calls where cuBLAS loads, for the q4 schemes (graph_passes adds it where it has
    q4 matmuls to offload). It is faster than the compiled kernels at every prompt length measured,
    4 to 512 tokens (H200, docs/benchmarks.md): their tiles pad short prompts to 128 rows."""
    cublas = isinstance(scheme, GroupQuant4) and scheme.model_dtype == "float16"
    return {"decode_graphs": "whole_step", **({"library_prefill": CUBLAS_ENTRY} if cublas else {})}


def schedule_passes(target) -> list:
    preset = PRESETS[str(target.attrs["arch"])]
    return gpu.schedule_passes(target, preset.gemv, preset.attention, prefill_blocks=preset.prefill_blocks, norm_threads=preset.norm_threads)


def device_code():
    return nullcontext({})
