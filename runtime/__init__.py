"""The runtime: loads a built model folder with the TVM runtime only (no compiler imports here)."""

from .engine import Engine

__all__ = ["Engine"]
