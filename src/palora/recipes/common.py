"""What every stage does the same way: seeding, loading, the stage log, required inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..artifacts import RunDir, write_json
from ..config import RunConfig
from ..errors import ConfigError
from ..linalg import fingerprint
from ..targets import find_targets

def require(value: Any, key: str, flag: str) -> Any:
    """Refuse a missing input in one line that names the config key and its flag."""
    if value in (None, ""):
        raise ConfigError(f"{key} is not set (pass {flag} or --set {key}=...)")
    return value


def target_fingerprint(model, cfg: RunConfig) -> str:
    return fingerprint(find_targets(model, cfg.model.target_modules))


def read_stages(rd: RunDir) -> dict[str, Any]:
    return json.loads(rd.stages.read_text(encoding="utf-8")) if rd.stages.is_file() else {}


def record_stage(rd: RunDir, key: str, info: dict[str, Any]) -> None:
    """Merge ``info`` under ``key`` in ``stages.json`` (wall times, fingerprints, certificates)."""
    stages = read_stages(rd)
    stages[key] = info
    write_json(rd.stages, stages)


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
