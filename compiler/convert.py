"""Weight conversion: HF checkpoint -> quantized params in the tensor-cache format.

Driven by the manifest's weight list (our name, the HF tensors it is made of, whether it is
quantized), so it needs no TVM at all and can run where only the TVM runtime is installed.
Streams one weight at a time: peak memory is about one fused weight, not the model.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runtime import dist
from ..runtime.tensor_cache import INDEX, ShardWriter
from ..errors import CheckpointError
from .checkpoint import Checkpoint
from .quantization import get_quantization


@dataclass
class ConversionStats:
    num_weights: int = 0  # elements of the original weights
    stored_bytes: int = 0
    worst_group_error: float = 0.0  # max over groups of |w - dequant(w)| / |w| (L2, per group)
    worst_group_weight: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def bits_per_param(self) -> float:
        return 8 * self.stored_bytes / max(self.num_weights, 1)

    def to_manifest(self) -> dict:
        return {"bits_per_param": self.bits_per_param, "worst_group_error": self.worst_group_error,
                "worst_group_weight": self.worst_group_weight, "peak_rss_mb": self.peak_rss_mb}

    def summary(self) -> str:
        return (
            f"params: {self.stored_bytes / 2**20:.1f} MiB for {self.num_weights / 1e6:.2f}M weights "
            f"({self.bits_per_param:.2f} bits/param); worst group error {self.worst_group_error:.4f} "
            f"(in {self.worst_group_weight}); peak RSS {self.peak_rss_mb:.0f} MiB; {self.seconds:.1f} s"
        )


def open_checkpoint(model_dir: Path, manifest: dict) -> Checkpoint:
    """Open and check: every HF tensor used exactly once with the right shape, nothing left over;
    problems are listed by name. Reads headers only, so builds call it before compiling."""
    ckpt = Checkpoint(model_dir)
    weights, ignored = manifest["weights"], set(manifest["hf_ignored"])
    needed = [src for w in weights for src in w["hf"]]
    present = ckpt.names()
    missing = [n for n in needed if n not in present]
    leftover = sorted(present - set(needed) - ignored)
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing}")
    if leftover:
        problems.append(f"unexpected tensors (not used by the model): {leftover}")
    for w in weights:
        if any(src not in present for src in w["hf"]):
            continue
        shapes = [ckpt.shape(src) for src in w["hf"]]
        got = (sum(s[0] for s in shapes), *shapes[0][1:])
        if any(s[1:] != shapes[0][1:] for s in shapes) or list(got) != list(w["shape"]):
            parts = " + ".join(f"{src} {list(s)}" for src, s in zip(w["hf"], shapes))
            problems.append(f"{w['name']}: expected shape {list(w['shape'])}, got {parts}")
    if problems:
        raise CheckpointError(f"{model_dir}: checkpoint does not match the model:\n  " + "\n  ".join(problems))
    return ckpt


def convert(model_dir: Path, manifest: dict, out_dir: Path, log=print, checkpoint: Checkpoint | None = None) -> ConversionStats:
    """Write params for `manifest` (weights + params lists) from the checkpoint in `model_dir`;
    `checkpoint`: the one open_checkpoint already opened and checked, if any."""
    start = time.time()
    scheme = get_quantization(manifest["quantization"], manifest.get("max_param_bytes"))
    ckpt = checkpoint or open_checkpoint(model_dir, manifest)
    weights = manifest["weights"]
    expected = {p["name"]: p for p in manifest["params"]}
    written: set[str] = set()
    stats = ConversionStats()
    writer = ShardWriter(out_dir)
    for i, w in enumerate(weights):
        full = np.concatenate([ckpt.get(src) for src in w["hf"]], axis=0).astype(np.float32)
        stored = scheme.quantize(w["name"], full, w["quantized"])
        for name, array in stored.items():
            spec = expected.get(name)
            if spec is None or list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise RuntimeError(f"internal: converted {name} {list(array.shape)} {array.dtype} does not match the manifest entry {spec}")
            writer.add(name, array)
            written.add(name)
            stats.stored_bytes += array.nbytes
        stats.num_weights += full.size
        _track_group_error(stats, w["name"], full, scheme.restore(w["name"], stored, w["quantized"]))
        if log and (i + 1) % 50 == 0:
            log(f"  converted {i + 1}/{len(weights)} weights")
    writer.close()
    not_written = sorted(set(expected) - set(written))
    if not_written:
        raise RuntimeError(f"internal: params in the manifest that conversion did not produce: {not_written}")
    stats.seconds = time.time() - start
    stats.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return stats


def replace_params(model_dir: Path, dist_dir: Path, log=print) -> ConversionStats:
    """Convert weights into an existing build folder, e.g. on a machine with only the TVM runtime
    where the library was copied but the weights were not. Old params go only once new ones exist."""
    dist_dir = Path(dist_dir)
    manifest = dist.read_manifest(dist_dir)
    tmp = dist_dir / f".params-partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        stats = convert(Path(model_dir), manifest, tmp, log)
        manifest["conversion"] = stats.to_manifest()
        (tmp / dist.MANIFEST).write_text(json.dumps(manifest, indent=1))
        for old in [*dist_dir.glob("params_shard_*.bin"), dist_dir / INDEX]:
            old.unlink(missing_ok=True)
        for new in tmp.iterdir():
            new.rename(dist_dir / new.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


def _track_group_error(stats: ConversionStats, name: str, w: np.ndarray, restored: np.ndarray, group: int = 32) -> None:
    if w.shape[-1] % group:
        group = w.shape[-1]
    err = (restored - w).reshape(-1, group)
    rel = np.linalg.norm(err, axis=1) / np.maximum(np.linalg.norm(w.reshape(-1, group), axis=1), 1e-30)
    worst = float(rel.max())
    if worst > stats.worst_group_error:
        stats.worst_group_error, stats.worst_group_weight = worst, name
