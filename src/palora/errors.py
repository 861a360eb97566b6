"""Errors that the CLI reports as one line (no traceback unless ``--debug``)."""

from __future__ import annotations


class PaloraError(Exception):
    """Base class: a problem with the user's input or files, explained in one line."""


class ConfigError(PaloraError):
    """An unknown key, a wrong type or an out-of-range value in the configuration."""


class DataError(PaloraError):
    """A malformed data file; the message names the file and line."""


class ModelError(PaloraError):
    """A model that cannot be loaded or adapted (no matching target modules, ...)."""


class ArtifactError(PaloraError):
    """A missing, corrupted or mismatched artifact (expert, subspace, adapter)."""


class FingerprintError(ArtifactError):
    """An artifact made for other base weights than the model it is loaded onto."""


def one_line(err: BaseException) -> str:
    """The first non-blank line of a library's error message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__
