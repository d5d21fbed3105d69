"""The params format: `tensor-cache.json` + `params_shard_*.bin`, as `vm.builtin.tensor_cache.load`
reads it, with an md5 per shard so that a corrupt or truncated shard is caught before loading.

No TVM here: conversion writes this format where only numpy is present.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import ParamsError

INDEX = "tensor-cache.json"
SHARD_BYTES = 32 * 1024 * 1024
_ALIGN = 64  # byte offsets of tensors inside a shard



class ShardWriter:
    """Appends tensors to ~32 MB shards in the order given; `close()` writes the index."""

    def __init__(self, out_dir: Path, shard_bytes: int = SHARD_BYTES):
        self.out_dir = Path(out_dir)
        self.shard_bytes = shard_bytes
        self.shards: list[dict] = []
        self._file = None
        self._md5 = None

    def add(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if self._file is None or (self.shards[-1]["nbytes"] and self.shards[-1]["nbytes"] + array.nbytes > self.shard_bytes):
            self._start_shard()
        shard = self.shards[-1]
        pad = -shard["nbytes"] % _ALIGN
        self._write(b"\0" * pad)
        shard["records"].append(
            {
                "name": name,
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "format": "raw",
                "nbytes": array.nbytes,
                "byteOffset": shard["nbytes"] + pad,
            }
        )
        self._write(array.tobytes())
        shard["nbytes"] += pad + array.nbytes

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._md5.update(data)

    def _start_shard(self) -> None:
        self._finish_shard()
        path = f"params_shard_{len(self.shards)}.bin"
        self.shards.append({"dataPath": path, "format": "raw-shard", "nbytes": 0, "records": []})
        self._file = open(self.out_dir / path, "wb")
        self._md5 = hashlib.md5()

    def _finish_shard(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[-1]["md5sum"] = self._md5.hexdigest()
            self._file = None

    def close(self) -> dict:
        self._finish_shard()
        index = {"metadata": {"ParamSize": sum(len(s["records"]) for s in self.shards)}, "records": self.shards}
        (self.out_dir / INDEX).write_text(json.dumps(index, indent=1))
        return index


def read_index(params_dir: Path) -> dict:
    path = Path(params_dir) / INDEX
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: missing; is {params_dir} a folder made by `mlcgen build`?") from None
    except json.JSONDecodeError as e:
        raise ParamsError(f"{path}: not valid JSON ({e})") from None


def param_records(index: dict) -> dict[str, dict]:
    return {r["name"]: r for shard in index["records"] for r in shard["records"]}


def verify_shards(params_dir: Path, index: dict) -> None:
    """Size and md5 of every shard against the index: a corrupt shard is named, never loaded."""
    for shard in index["records"]:
        path = Path(params_dir) / shard["dataPath"]
        if not path.exists():
            raise ParamsError(f"{path}: missing shard listed in {INDEX}")
        size = path.stat().st_size
        if size != shard["nbytes"]:
            raise ParamsError(f"{path}: {size} bytes, but {INDEX} says {shard['nbytes']} (truncated or replaced shard)")
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                md5.update(chunk)
        if "md5sum" in shard and md5.hexdigest() != shard["md5sum"]:
            raise ParamsError(f"{path}: md5 {md5.hexdigest()} does not match {INDEX} ({shard['md5sum']}): the shard is corrupt")
