"""`mlcgen inspect`: what the AMD code object of a ROCm build says about each kernel, and a decode
speed projection for the card. Reads `kernels.hsaco` with LLVM's readelf/objdump; needs no GPU.

Occupancy (waves per SIMD) is computed from the kernel's VGPRs and LDS with the limits in
SIMD_LIMITS, as the hardware allocates them; it is an upper bound (it ignores SGPRs, which do not
limit these archs at the counts seen, and the scheduler).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ParamsError
from .rocm import CODE_OBJECT, PRESETS, llvm_tool


@dataclass(frozen=True)
class SimdLimits:
    vgprs: int  # per SIMD lane, what one SIMD holds for all its waves
    granule: int  # VGPR allocation unit per wave
    max_waves: int  # per SIMD
    simds_per_lds: int  # SIMDs sharing one LDS
    lds_bytes: int


SIMD_LIMITS = {
    # RDNA3 (gfx1100, wave32): 1536 VGPRs per SIMD, allocated in blocks of 24, 16 waves per SIMD;
    # a WGP's 4 SIMDs share 128 KiB of LDS (AMD RDNA3 ISA guide; LLVM AMDGPUBaseInfo).
    "gfx1100": SimdLimits(vgprs=1536, granule=24, max_waves=16, simds_per_lds=4, lds_bytes=128 * 1024),
    # CDNA2 (gfx90a, wave64): 512 unified VGPRs+AGPRs per SIMD lane, blocks of 8, 8 waves per SIMD;
    # a CU's 4 SIMDs share 64 KiB of LDS (AMD CDNA2 ISA guide; LLVM AMDGPUBaseInfo).
    "gfx90a": SimdLimits(vgprs=512, granule=8, max_waves=8, simds_per_lds=4, lds_bytes=64 * 1024),
}

# Fraction of a device copy's bandwidth that the decode matmuls reached on the GPU machine with the
# schedule these builds use (targets/schedules/dequant_gemv.py with the gfx1100 preset's knobs
# 32-4-4-2-2 and packed fp16 pairs, compiled to CUDA: float32 multiply-adds where AMD has
# v_dot2_f32_f16): the four per-layer matmuls of q4f16_1 Llama-2-7B, 114 MB in 55.5 us = 2055 GB/s
# against a 4253 GB/s copy on an NVIDIA H200, 2026-11-22, `benchmarks/gemv_efficiency.py`
# (docs/benchmarks.md). The float32 form reached 0.43 there.
GEMV_EFFICIENCY = 0.48


def _llvm_tool(name: str) -> str:
    found = llvm_tool(name)
    if not found:
        raise ConfigError(f"`mlcgen inspect` needs LLVM's {name}: run scripts/install-system-deps.sh (apt-get install llvm-19)")
    return found


def kernel_resources(code_object: Path) -> tuple[str, dict[str, dict]]:
    """The code object's arch (from amdhsa.target) and, per kernel, the AMDGPU metadata note's
    fields (.vgpr_count, .sgpr_count, ...)."""
    notes = subprocess.run([_llvm_tool("llvm-readelf"), "--notes", str(code_object)], capture_output=True, text=True, check=True).stdout
    arch = re.search(r"^amdhsa\.target:\s+amdgcn-amd-amdhsa-\S*-(gfx\w+)\s*$", notes, re.M)
    kernels, current = {}, None
    for line in notes.splitlines():
        if line.startswith("  - "):
            current = {}
        field = re.match(r"^    \.(\w+):\s*(.*)$", line)
        if current is not None and field:
            key, value = field.groups()
            current[key] = int(value) if value.lstrip("-").isdigit() else value
            if key == "name":
                kernels[value] = current
    return (arch.group(1) if arch else "unknown"), kernels


def instruction_mix(code_object: Path, mcpu: str) -> dict[str, Counter]:
    """Per kernel: counts of the instructions that matter for memory-bound kernels: global load
    widths, vector ALU instructions (valu) and among them dot / packed / MFMA / WMMA ones, the dot
    instructions also by name."""
    text = subprocess.run([_llvm_tool("llvm-objdump"), "-d", f"--mcpu={mcpu}", str(code_object)], capture_output=True, text=True, check=True).stdout
    mix, current = {}, None
    for line in text.splitlines():
        label = re.match(r"^[0-9a-f]+ <(\w+)>:$", line)
        if label:
            current = mix.setdefault(label.group(1), Counter())
            continue
        if current is None or not line.startswith("\t"):
            continue
        # RDNA3 dual issue (VOPD) prints two operations: "v_dual_X ... :: v_dual_Y ..."
        for op in re.findall(r"(?:^\t|:: )(\w+)", line.split("//")[0]):
            name = op.replace("v_dual_", "v_", 1)
            if name.startswith("v_"):
                current["valu"] += 1
            if name.startswith("global_load"):
                current[name.removeprefix("global_load_")] += 1
            for family in ("v_dot", "v_pk_", "v_mfma", "v_wmma"):
                if name.startswith(family):
                    current[family.strip("_")] += 1
            if name.startswith("v_dot"):  # and by name: which dot product (fp16 pairs, int8 quads)
                current[name] += 1
    return mix


def waves_per_simd(res: dict, limits: SimdLimits, wave_size: int) -> int:
    vgprs = res.get("vgpr_count", 0) + res.get("agpr_count", 0)
    by_vgpr = limits.vgprs // (-(-max(vgprs, 1) // limits.granule) * limits.granule)
    lds = res.get("group_segment_fixed_size", 0)
    waves_per_group = -(-res.get("max_flat_workgroup_size", wave_size) // wave_size)
    by_lds = limits.max_waves if lds == 0 else (limits.lds_bytes // lds) * waves_per_group // limits.simds_per_lds
    return max(0, min(limits.max_waves, by_vgpr, by_lds))


def inspect(dist_dir: Path) -> dict:
    dist_dir = Path(dist_dir)
    manifest = json.loads((dist_dir / "manifest.json").read_text())
    kind, _, mcpu = manifest["target"]["name"].partition(":")
    code_object = dist_dir / CODE_OBJECT
    if kind != "rocm" or not code_object.is_file():
        raise ParamsError(f"{dist_dir}: `mlcgen inspect` reads AMD builds (--target rocm); this one is {manifest['target']['name']}")
    preset, limits = PRESETS[mcpu], SIMD_LIMITS[mcpu]
    arch, resources = kernel_resources(code_object)
    if arch != mcpu:
        raise ParamsError(f"{code_object}: code object is for {arch}, the manifest says {mcpu}")
    mix = instruction_mix(code_object, mcpu)
    rows = []
    for name, res in sorted(resources.items()):
        rows.append({"kernel": name, "vgpr": res.get("vgpr_count"), "agpr": res.get("agpr_count", 0), "sgpr": res.get("sgpr_count"),
                     "lds": res.get("group_segment_fixed_size"), "scratch": res.get("private_segment_fixed_size"),
                     "wave": res.get("wavefront_size"), "waves_per_simd": waves_per_simd(res, limits, preset.wave_size),
                     "mix": dict(mix.get(name, Counter()))})
    return {"dist": str(dist_dir), "arch": mcpu, "card": preset.card, "kernels": rows, "projection": projection(manifest, preset)}


def projection(manifest: dict, preset) -> dict:
    """Decode tok/s if every byte a decode step must move moves at the card's bandwidth times the
    efficiency the same kernel family reached on the GPU machine. A projection, not a measurement."""
    cfg = manifest["model"]["config"]
    weights = sum(k["calls"] * k["bytes_per_call"] for k in manifest.get("decode_kernels", []))
    kv_per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * (2 if manifest["model_dtype"] == "float16" else 4)
    rows = {}
    for context in (128, 1024, 4096):
        if context > manifest["context_window"]:
            continue
        total = weights + kv_per_token * context
        row = {"bytes_per_token": total, "bound_tok_s": preset.bandwidth_gbs * 1e9 / total}
        if GEMV_EFFICIENCY:
            row["projected_tok_s"] = row["bound_tok_s"] * GEMV_EFFICIENCY
        rows[context] = row
    return {"bandwidth_gbs": preset.bandwidth_gbs, "efficiency": GEMV_EFFICIENCY, "contexts": rows}


def format_report(report: dict) -> str:
    lines = [f"{report['dist']}: {report['arch']} ({report['card']})", ""]
    header = f"{'kernel':44} {'VGPR':>5} {'AGPR':>5} {'SGPR':>5} {'LDS':>7} {'scratch':>7} {'wave':>4} {'waves/SIMD':>10}  instruction mix"
    lines.append(header)
    for r in report["kernels"]:
        mix = " ".join(f"{k}:{v}" for k, v in sorted(r["mix"].items())) or "-"
        lines.append(f"{r['kernel'][:44]:44} {r['vgpr']:>5} {r['agpr']:>5} {r['sgpr']:>5} {r['lds']:>7} {r['scratch']:>7} {r['wave']:>4} {r['waves_per_simd']:>10}  {mix}")
    p = report["projection"]
    lines += ["", f"Decode projection for the {report['card']} ({p['bandwidth_gbs']:.0f} GB/s), PROJECTED, not measured:"]
    for context, row in p["contexts"].items():
        projected = f", projected {row['projected_tok_s']:.0f} tok/s at efficiency {p['efficiency']:.2f}" if "projected_tok_s" in row else ", no measured efficiency"
        lines.append(f"  context {context:>5}: {row['bytes_per_token'] / 2**20:8.1f} MiB/token, bandwidth bound {row['bound_tok_s']:.0f} tok/s{projected}")
    return "\n".join(lines)
