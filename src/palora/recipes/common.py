"""What every stage does the same way: seeding, loading, the stage log, required inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..artifacts import RunDir, write_json
from ..config import RunConfig
from ..errors import ConfigError
from ..linalg import fingerprint
from ..targets import find_targets
from .run_state import read_stages, stamp


def require(value: Any, key: str, flag: str) -> Any:
    """Refuse a missing input in one line that names the config key and its flag."""
    if value in (None, ""):
        raise ConfigError(f"{key} is not set (pass {flag} or --set {key}=...)")
    return value


def target_fingerprint(model, cfg: RunConfig) -> str:
    return fingerprint(find_targets(model, cfg.model.target_modules))


def record_stage(rd: RunDir, cfg: RunConfig, key: str, info: dict[str, Any]) -> None:
    """Record ``info`` under ``key`` in ``stages.json`` (wall times, fingerprints, certificates),
    with the digests that tell a later command whether the stage is done (:mod:`.run_state`)."""
    stages = read_stages(rd)
    stages[key] = {**info, **stamp(rd, cfg, key)}
    write_json(rd.stages, stages)


def load_trained(model: nn.Module, trained: dict[str, torch.Tensor]) -> nn.Module:
    """Copy trained parameters (by name) into a freshly built, unsharded copy of the trained model."""
    result = model.load_state_dict(trained, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"trained parameters without a place in the rebuilt model: {result.unexpected_keys[:3]}")
    return model


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
