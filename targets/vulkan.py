"""Vulkan: WGSL kernels (TVM's webgpu codegen) run by wgpu's Vulkan backend.

The TVM wheel has no SPIR-V codegen and no Vulkan runtime; it does emit WGSL, and wgpu-native
(in the `wgpu` wheel) compiles WGSL for Vulkan: Mesa's lavapipe on a CPU, RADV on AMD GPUs (the
Steam Deck), NVIDIA's driver on the GPU machine here. runtime/wgpu/plugin.cc is the device plugin
that runs such libraries; runtime/vulkan.py builds and loads it.

Subgroups: TVM lowers a cross-thread reduction to subgroup shuffles when the target says the
device has them, assuming subgroups of exactly `thread_warp_size` lanes. WebGPU cannot pin the
subgroup width of a pipeline (RADV picks wave32 or wave64 per shader, lavapipe's width follows its
SIMD width), so presets that run on such drivers reduce through workgroup memory instead; the
`nvidia` preset, whose subgroups are always 32 wide, uses them (the runtime checks the adapter's
subgroup width before running such a library).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from . import gpu
from .schedules.dequant_gemv import GemvKnobs
from .schedules.split_kv_decode import AttentionKnobs

DEVICE = "vulkan"


@dataclass(frozen=True)
class Preset:
    """Facts and knobs of one device class; each value's source is in PRESETS' comments."""

    subgroup_size: int  # 0: reductions through workgroup memory, no subgroup operations
    max_threads: int
    workgroup_bytes: int
    gemv: GemvKnobs
    attention: AttentionKnobs
    model_memory_gib: float = 0  # memory a model may take, for devices whose memory is known (unified)
    norm_threads: int = 256  # per row of the fused add + RMSNorm (schedules/add_rms_norm.py)


PRESETS = {
    # Any Vulkan device, lavapipe (CI) included: 256 invocations per workgroup (WebGPU's default,
    # which every adapter offers) and 32 KiB of workgroup memory (Vulkan promises only 16, but
    # lavapipe, RADV and NVIDIA all offer 32 or more, and TVM's attention kernels for head_dim 128
    # need 16.25), no subgroups.
    # GEMV: 32 lanes per row reduce through workgroup memory, each loading 4 words (32 weights, one
    # scale group) per step for two rows; 4 x 32 = 128 invocations per workgroup. Activations 4 x
    # fp16 per load (WGSL vectors stop at 4 lanes), in all presets. Sweep on the one Vulkan GPU
    # here (H200, unchecked shaders with the plugin's vec4 loads, 7B layer matmuls,
    # `benchmarks/vulkan_speed.py`): 32 lanes 986 GB/s, 16 lanes 813, 8 lanes x 2 steps 823.
    # (Before the plugin loaded vectors whole, 8 lanes x 2 steps won: 730 vs 430 GB/s.)
    # Decode attention: 4 x fp16 per lane (WGSL's widest vector), 128 invocations per workgroup,
    # 256 workgroups (enough for any GPU a generic build may meet).
    "generic": Preset(0, 256, 32768,
                      GemvKnobs(threads_per_row=32, rows_per_block=4, vector_words=4, unroll=1, rows_per_thread=2, activation_lanes=4, fold_rms_norm=True),
                      AttentionKnobs(vector=4, threads=128, unroll=4, blocks=256, fuse_rope_append=True)),
    # Steam Deck APU (AMD "Van Gogh"): RDNA2, 8 CUs, LPDDR5-5500 on a 128-bit bus = 88 GB/s,
    # 16 GB shared by CPU and GPU (Valve's spec sheet). RADV offers 1024 invocations and 64 KiB of
    # LDS per workgroup; we stay at 256 invocations (4 wave64 or 8 wave32 per workgroup, either
    # way a full CU's SIMDs) and 32 KiB so two workgroups fit a CU. No subgroups (module note).
    # Of the 16 GB we leave 4 to SteamOS and its UI: a model may take 12 GiB (a 7B q4f16_1 model
    # with a 2048-token context needs 4.62: benchmarks/vulkan_speed.py build, tests/test_vulkan.py).
    # Decode attention as generic, ~4 workgroups per CU.
    "steamdeck": Preset(0, 256, 32768,
                        GemvKnobs(threads_per_row=32, rows_per_block=4, vector_words=4, unroll=2, rows_per_thread=2, activation_lanes=4, fold_rms_norm=True),
                        AttentionKnobs(vector=4, threads=128, unroll=4, blocks=8 * 4, fuse_rope_append=True),
                        model_memory_gib=12),
    # NVIDIA GPUs through their Vulkan driver (the H100/H200 here): subgroups are warps, 32 wide.
    # GEMV: the generic knobs, which the same sweep puts first here too (1027 GB/s), with each
    # group in packed fp16 pairs (schedules/packed_dot.py): 1094 GB/s in the same run (2026-11-22);
    # the activation loaded as 16-byte words (activation_words): 7B q/k/v 844 -> 728 us a step,
    # gate/up 1156 -> 973, o 475 -> 431, decode +8% (vulkan_speed.py, H200, 2026-12-01). 4 rows
    # per lane with words: 4862 -> 5016 us of kernels a 7B step, 5279 -> 5684 for 8B. 2 steps
    # unrolled instead of 1: decode 8B 278.7 -> 291.3 tok/s, 7B 290.4 -> 297.0, but 7B's padded
    # down projection 796 -> 863 us a step (384 groups instead of 352: max_padding keeps it at 1
    # step) (2026-12-02). 4 steps unrolled (the 7B down projection keeps 1, 8B's 2: the rule in
    # schedules/dequant_gemv.py): decode 7B 296.5-297.3 -> 303.4-304.1 tok/s, 8B 297.6-297.8 ->
    # 305.1-305.9 (three runs each, two calls, interleaved); 16 (all of a lane's steps, as CUDA):
    # 7B 308.5, 8B 265.4 (2026-12-02, session 20).
    # The decode RMSNorms folded into the GEMVs (fold_rms_norm, all three presets: their products are
    # float32): 7B decode 304.2 -> 325.7 tok/s at context 128, 275.7 -> 294.0 at 1024, 326 -> 263
    # dispatches a step (vulkan_speed.py, H200, both libraries in one call, 2026-12-02, session 24).
    # Decode attention as generic, ~4 workgroups per SM of an H100/H200 (132 SMs); a GQA group's
    # heads merged at once (parallel_merge): Llama-3-8B decode 318.2 -> 333.2 tok/s at context 128,
    # 289.5 -> 308.4 at 1024 (vulkan_speed.py, H200, one call, 2026-12-03, session 28; generic and
    # steamdeck keep the serial merge: not measured on their devices).
    # Up to 384 rows a KV head is read by one workgroup of 1024 invocations, which writes the
    # output itself, no merge dispatch (whole_rows, as cuda): 7B decode at context 128 322.4 / 321.9
    # -> 341.1 tok/s, 333.7-335.4 with 512 invocations; profiled attention 682 -> 379 us a step
    # (vulkan_speed.py, H200, one call, 2026-12-03, session 30; with 256 invocations no gain, session
    # 26); up to 1024 rows: 7B at context 1024 293 -> 279. Grouped models stay split (as cuda): with
    # RoPE and the append fused in, Llama-3-8B's 8 whole workgroups took 694 us a step at context 128
    # against 506 split, decode 354.6 -> 361.1 tok/s (vulkan_speed.py, H200, one call, session 32;
    # neutral before the fusion, session 30); 2 rows a slot for them (as cuda): their split kernel
    # 496 -> 427 us a step, decode 362.8-363.7 -> 366.1-366.8 tok/s at 128, neutral at 1024 (same
    # calls, three and four runs).
    # Split path with 256 invocations a workgroup (8 row slots): decode at context 1024 7B 293.0-295.2
    # -> 303.9-305.0 tok/s, 8B 304.6-307.7 -> 319.2 (vulkan_speed.py, H200, session 30; 264 blocks
    # instead of 528: 7B 280.4).
    # Add + RMSNorm: 512 threads a row, 8.6 us a call alone against 9.4 with 256 (1024: 8.7;
    # timestamps after each, H200, 2026-12-02).
    "nvidia": Preset(32, 1024, 49152,
                     GemvKnobs(threads_per_row=32, rows_per_block=4, vector_words=4, unroll=4, rows_per_thread=2, activation_lanes=4, packed_fp16=True,
                               activation_words=True, max_padding=1 / 16, fold_rms_norm=True),
                     AttentionKnobs(vector=4, threads=256, unroll=4, blocks=528, parallel_merge=True, whole_rows=384, whole_threads=1024,
                                    grouped_whole_rows=0, grouped_unroll=2, fuse_rope_append=True),
                     norm_threads=512),
}


def default_preset() -> tuple[str, str]:
    return "generic", "runs on any Vulkan device; vulkan:steamdeck and vulkan:nvidia are tuned presets"


def tvm_target(preset: str):
    from tvm.target import Target

    p = PRESETS[preset]
    return Target({"kind": "webgpu", "tag": preset, "supports_subgroups": p.subgroup_size > 0, "thread_warp_size": max(p.subgroup_size, 1),
                   "max_num_threads": p.max_threads, "max_shared_memory_per_block": p.workgroup_bytes},
                  host={"kind": "llvm"})


QUANTIZATIONS, QUANTIZATION_NOTE = gpu.QUANTIZATIONS, gpu.QUANTIZATION_NOTE
# A kernel sees each tensor through one storage-buffer binding. WebGPU's default
# maxStorageBufferBindingSize is 128 MiB: every adapter binds that much, lavapipe no more (NVIDIA:
# 2 GiB). Weights past it (Llama-3's 128K-vocab embedding and lm_head: 250 MiB) are stored in row
# chunks, so one library runs on every adapter.
MAX_PARAM_BYTES = 128 << 20
TIR_PIPELINE = "default"


INT8_ACTIVATIONS = True  # --int8-activations: dot4I8Packed (compiler/int8_activations.py)


def graph_passes(target, int8_activations: bool = False) -> list:
    preset = PRESETS[str(target.tag)]
    return gpu.decode_passes(preset.gemv, preset.max_threads, int8_activations)


def runtime_facts(preset: str, scheme) -> dict:
    """Recorded in the manifest, checked by the runtime against the adapter before loading."""
    p = PRESETS[preset]
    return {"subgroup_size": p.subgroup_size, "workgroup_bytes": p.workgroup_bytes, "max_threads": p.max_threads}


def schedule_passes(target) -> list:
    preset = PRESETS[str(target.tag)]
    return gpu.schedule_passes(target, preset.gemv, preset.attention, norm_threads=preset.norm_threads)


def device_code():
    return nullcontext({})
