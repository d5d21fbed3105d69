"""Read tensors of a Hugging Face checkpoint one at a time, memory-mapped.

Safetensors (single file or sharded with an index) are parsed here directly: the format is a JSON
header plus raw bytes, so numpy memory maps it and bf16 needs no torch. PyTorch `.bin`/`.pth`
checkpoints go through `torch.load(weights_only=True, mmap=True)`; torch is imported only then.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..errors import CheckpointError



_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class _SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{path}: header length {n} exceeds the file size {size}")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path}: unreadable safetensors header ({e})") from None
        header.pop("__metadata__", None)
        self.data_start = 8 + n
        self.tensors = header
        for name, info in header.items():
            begin, end = info["data_offsets"]
            if self.data_start + end > size:
                raise CheckpointError(f"{path}: tensor {name!r} ends at byte {self.data_start + end}, past the end of the file ({size}); the file is truncated")

    def get(self, name: str) -> np.ndarray:
        """A float array of the tensor. Each call maps just that tensor's bytes and copies them, so
        pages are released when the caller drops the array: RSS stays near one tensor, not the file."""
        info = self.tensors[name]
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{self.path}: tensor {name!r} has dtype {info['dtype']}; expected one of {list(_SAFETENSORS_DTYPES)}")
        begin, end = info["data_offsets"]
        if end - begin != int(np.prod(info["shape"])) * np.dtype(dtype).itemsize:
            raise CheckpointError(f"{self.path}: tensor {name!r} has {end - begin} bytes for shape {info['shape']} {info['dtype']}")
        if end == begin:
            return np.zeros(info["shape"], np.float32)
        raw = np.memmap(self.path, dtype=dtype, mode="r", offset=self.data_start + begin, shape=tuple(info["shape"]))
        return _bf16_to_f32(raw) if info["dtype"] == "BF16" else np.array(raw)


class _TorchFile:
    def __init__(self, path: Path):
        import torch  # only .bin/.pth checkpoints need torch

        try:
            self.tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # torch raises many types for a bad file; name the file
            raise CheckpointError(f"{path}: cannot read PyTorch checkpoint ({e})") from None
        self.path = path

    def get(self, name: str) -> np.ndarray:
        import torch

        t = self.tensors[name]
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


class Checkpoint:
    """Name -> tensor access over every file of a checkpoint folder."""

    def __init__(self, model_dir: Path):
        model_dir = Path(model_dir)
        self.files = [self._open(p) for p in _weight_files(model_dir)]
        self.where: dict[str, object] = {}
        for f in self.files:
            for name in f.tensors:
                if name in self.where:
                    raise CheckpointError(f"tensor {name!r} appears in both {self.where[name].path} and {f.path}")
                self.where[name] = f

    @staticmethod
    def _open(path: Path):
        return _SafetensorsFile(path) if path.suffix == ".safetensors" else _TorchFile(path)

    def names(self) -> set[str]:
        return set(self.where)

    def get(self, name: str) -> np.ndarray:
        return self.where[name].get(name)

    def shape(self, name: str) -> tuple[int, ...]:
        f = self.where[name]
        return tuple(f.tensors[name]["shape"] if isinstance(f, _SafetensorsFile) else f.tensors[name].shape)


def _weight_files(model_dir: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = model_dir / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: expected a JSON object with a 'weight_map' ({e})") from None
            files = sorted({model_dir / f for f in weight_map.values()})
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise CheckpointError(f"{index}: lists shard files that do not exist: {missing}")
            return files
    for pattern in ("*.safetensors", "pytorch_model*.bin", "*.pth"):
        files = sorted(model_dir.glob(pattern))
        if files:
            return files
    raise CheckpointError(f"{model_dir}: no weights found (expected *.safetensors, an index .json, pytorch_model*.bin or *.pth)")
