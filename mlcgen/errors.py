"""Errors a user can act on. The CLI prints their message without a traceback."""


class MlcgenError(Exception):
    pass


class ConfigError(MlcgenError, ValueError):
    """A model's config.json (or a build option) asks for something unsupported or lacks a key."""


class CheckpointError(MlcgenError, ValueError):
    """Checkpoint files are missing, unreadable, or do not match the model."""


class ParamsError(MlcgenError, ValueError):
    """A built model folder (library, manifest, params) is incomplete, corrupt or inconsistent."""
