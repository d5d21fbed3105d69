"""Model families, chosen by the `architectures` field of a checkpoint's config.json."""

from __future__ import annotations

from ..errors import ConfigError
from . import llama, mistral, phi3, qwen2

FAMILIES = {arch: family for family in (llama, mistral, phi3, qwen2) for arch in family.ARCHITECTURES}


def family_for(hf_config: dict, source: str):
    archs = hf_config.get("architectures") or []
    for arch in archs:
        if arch in FAMILIES:
            return FAMILIES[arch], arch
    raise ConfigError(f"{source}: architectures={archs!r} is not supported; supported: {', '.join(FAMILIES)}")
