"""Helpers of the typed configuration sections: a field with a help line, and a range check."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from ..errors import ConfigError


def documented(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help line (mutable defaults go through ``default_factory``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def check_value(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def require(value: Any, key: str, flag: str) -> Any:
    """Refuse a missing input in one line that names the config key and its flag."""
    if value in (None, ""):
        raise ConfigError(f"{key} is not set (pass {flag} or --set {key}=...)")
    return value
