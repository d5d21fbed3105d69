"""Compilation targets, chosen by name from a dict. A name is `kind` or `kind:preset`."""

from __future__ import annotations

from ..errors import ConfigError
from . import cpu, cuda, rocm, vulkan

TARGETS = {"cpu": cpu, "cuda": cuda, "rocm": rocm, "vulkan": vulkan}


def get_target(name: str):
    """'cpu', 'rocm:gfx90a' -> (the target module, its preset, why that preset). Unknown names
    list the choices."""
    kind, _, preset = name.partition(":")
    if kind not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    module = TARGETS[kind]
    if preset and preset not in module.PRESETS:
        raise ConfigError(f"unknown preset {preset!r} for target {kind!r}; choose one of: {', '.join(module.PRESETS)}")
    if preset:
        return module, preset, "asked for"
    return (module, *module.default_preset())
