"""The layout of a built model folder (`dist/<name>/`) and its manifest. No TVM compiler here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ParamsError

FORMAT_VERSION = 2  # 2: the engine holds the KV cache (entries take its pages and tables)
MANIFEST = "manifest.json"
LIBRARY = "lib.so"
CHAT_CONFIG = "chat-config.json"
# Manifest keys filled in after compilation; the library's copy of the manifest lacks them.
POST_COMPILE_KEYS = ("memory", "decode_kernels", "conversion", "tokenizer_files")


def read_manifest(dist_dir: Path) -> dict:
    path = Path(dist_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: missing; is {dist_dir} a folder made by `mlcgen build`?") from None
    except json.JSONDecodeError as e:
        raise ParamsError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ParamsError(f"{path}: format_version {manifest.get('format_version')!r}, this mlcgen reads {FORMAT_VERSION}; rebuild the model")
    return manifest


def library_manifest(manifest: dict) -> dict:
    """The part of the manifest that is compiled into the library."""
    return {k: v for k, v in manifest.items() if k not in POST_COMPILE_KEYS}


def param_bytes(param: dict) -> int:
    """Bytes of one manifest param ({"shape", "dtype"})."""
    return int(np.prod(param["shape"])) * np.dtype(param["dtype"]).itemsize


def params_bytes(manifest: dict) -> int:
    return sum(param_bytes(p) for p in manifest["params"])


def kv_cache_bytes_per_token(manifest: dict) -> int:
    """K and V of one token, every layer."""
    cfg = manifest["model"]["config"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * np.dtype(manifest["model_dtype"]).itemsize


def kv_cache_pages(manifest: dict) -> int:
    """Pages of the KV cache a layer: the context window's (compiler/kv_cache.py)."""
    return -(-manifest["context_window"] // manifest["page_size"])


def kv_cache_bytes(manifest: dict) -> int:
    """K and V for every layer as the engine allocates them: the context window in whole pages."""
    return kv_cache_bytes_per_token(manifest) * kv_cache_pages(manifest) * manifest["page_size"]


def context_window_that_fits(manifest: dict, kv_bytes: int) -> int:
    """The largest context window (whole pages) whose KV cache, as kv_cache_bytes counts it, takes
    at most kv_bytes; 0 where not even one page does."""
    page = manifest["page_size"]
    return kv_bytes // kv_cache_bytes_per_token(manifest) // page * page
