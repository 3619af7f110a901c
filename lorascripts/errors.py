"""The engine's error hierarchy.

Every error a user can cause is one of these, and its message says what went wrong, where (file, line or
config key) and how to fix it. Hosts show the message as-is; the CLI prints it without a traceback.
"""

from __future__ import annotations


class LoraScriptsError(Exception):
    """Base class of every error the engine raises on purpose."""

    exit_code = 1


class ConfigError(LoraScriptsError):
    """A configuration key is missing, unknown or has a bad value."""

    exit_code = 2


class DatasetError(LoraScriptsError):
    """The dataset folder, an image or a caption file cannot be used."""

    exit_code = 3


class ModelError(LoraScriptsError):
    """A base model or LoRA file cannot be loaded, or is of the wrong family."""

    exit_code = 4


class TrainingError(LoraScriptsError):
    """Training stopped because of a problem it cannot recover from (NaN loss, out of memory, ...)."""

    exit_code = 5


class StorageError(LoraScriptsError):
    """A file could not be written because the disk (or a quota / file-size limit) is full; what was saved
    before is intact."""

    exit_code = 6


class DependencyError(LoraScriptsError):
    """A package the engine needs is missing from, or does not fit, the Python that runs it; the message names
    the package, the Python and the command that repairs it."""

    exit_code = 7


class StopRequested(LoraScriptsError):
    """Training was asked to stop (Cancel in a host, Ctrl+C); the last checkpoint is kept."""

    exit_code = 130
