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
    """The first non-blank line of a library's error message (its type name when it has none); a
    line that ends in a colon gets the next one, so that the sentence is not cut."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def install_hint(extra: str) -> str:
    """How to install one of palora's extras: its packages by name, read from the installed
    distribution's metadata (palora installs from its clone, not from a package index)."""
    import importlib.metadata

    try:
        requires = importlib.metadata.requires("palora-llm") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []

    def packages(name: str) -> list[str]:
        out = []
        for line in requires:
            spec, _, marker = line.partition(";")
            if f'extra == "{name}"' not in marker:
                continue
            spec = spec.strip()
            name, bracket, extras = spec.partition("[")
            if bracket and name.replace("_", "-") == "palora-llm":  # an extra made of other extras ([logging])
                out += [p for sub in extras.rstrip("]").split(",") for p in packages(sub.strip())]
            else:
                out.append(spec)
        return out

    named = " ".join(f"'{p}'" for p in packages(extra))
    clone = f"in palora's clone: pip install -e '.[{extra}]'"
    return f"pip install {named} ({clone})" if named else clone
