"""Building a configuration: defaults, then a YAML file, then ``--set key=value`` overrides and the
verb's flags (:func:`resolve`); every value checked against its field's type, unknown keys refused
with the closest valid key suggested; ``save`` / ``load`` of the resolved ``config.yaml``."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from .fields import check_value
from .sections import REMOVED_KEYS, RunConfig


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(key: str, value: Any, tp: Any, base: Any = None) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are asked.

    ``base`` is the current value of a nested section, whose unset keys are kept.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}={value!r}: wrong type")
    if origin is Literal:
        choices = typing.get_args(tp)
        check_value(value in choices, key, value, f"choose one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        check_value(isinstance(value, (list, tuple)), key, value, "expected a list")
        return [_coerce(key, v, item) for v in value]
    if tp is bool:
        check_value(isinstance(value, bool), key, value, "expected true or false")
        return value
    if tp is int:
        check_value(isinstance(value, int) and not isinstance(value, bool), key, value, "expected an integer")
        return value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        check_value(ok, key, value, "expected a number")
        check_value(math.isfinite(value), key, value, "expected a finite number")
        return float(value)
    if tp is str:
        check_value(isinstance(value, str), key, value, "expected a string")
        return value
    if _is_dataclass_type(tp):
        check_value(isinstance(value, dict), key, value, "expected a mapping")
        return from_dict(tp, value, prefix=f"{key}.", base=base)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - a programming error


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """``base`` (default: ``cls()``) with the keys of a nested mapping replaced; unknown keys refused.

    Starting from ``base`` keeps a section's own defaults: ``svf.train`` defaults to lr 1e-2,
    and setting only ``svf.train.steps`` must not reset it to ``TrainConfig``'s 1e-3.
    """
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if f"{prefix}{key}" in REMOVED_KEYS:
            same, why = REMOVED_KEYS[f"{prefix}{key}"]
            if value == same:  # what it always meant: an old config.yaml still loads
                continue
            raise ConfigError(f"{prefix}{key}={value} is no longer a setting: {why}")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        kwargs[key] = _coerce(f"{prefix}{key}", value, hints[key], getattr(base, key, None))
    try:
        return dataclasses.replace(base, **kwargs)
    except ConfigError as e:
        if prefix and not str(e).startswith(prefix):
            raise ConfigError(f"{prefix}{e}") from None
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; this loader reads it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``1e-3`` is a number, ``a,b`` a string)."""
    key, eq, raw = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set inject.rank=8")
    try:
        value = _yaml(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = _yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid UTF-8 (byte {e.start + 1})") from None
    except yaml.MarkedYAMLError as e:
        where = f":{e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({e.problem or e.context})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    return data


def resolve(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults < YAML file < ``--set`` overrides < explicit flags (dotted keys)."""
    tree: dict[str, Any] = load_yaml(config_file) if config_file else {}
    for text in overrides or []:
        _set_path(tree, *parse_override(text))
    for key, value in (flags or {}).items():
        if value is not None:
            _set_path(tree, key, value)
    return from_dict(RunConfig, tree)


def save(cfg: RunConfig, path: str | Path, omit: tuple[str, ...] = ()) -> None:
    """Write ``cfg`` as YAML, atomically (a temporary file, then a rename); the top-level sections
    ``omit`` are left out where they hold their defaults (loading the file gives them back)."""
    path = Path(path)
    tree = to_dict(cfg)
    defaults = to_dict(RunConfig())
    tree = {k: v for k, v in tree.items() if not (k in omit and v == defaults[k])}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def load(path: str | Path) -> RunConfig:
    return from_dict(RunConfig, load_yaml(path))
