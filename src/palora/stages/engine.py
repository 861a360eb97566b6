"""What a run directory already holds, for which settings: one digest system for every stage.

A :class:`Stage` declares, next to its code, its key in ``stages.json``, the configuration keys and
data files its result depends on (``inputs``), the stages it builds on (``upstream``) and the files
it writes (``outputs``), of which those a finished stage must leave (``leaves``). Each stage
records in ``stages.json`` the digest of its inputs and the digests of its upstream stages at the
time it ran. For a configuration ``cfg`` a recorded stage is

- **done** when its digest is ``cfg``'s, the stages it builds on are still the ones it used and
  what it leaves is there: rerunning the same command skips it (a stage whose result was removed,
  or never copied along with ``stages.json``, runs again);
- **stale** when either differs, or when a stage it builds on is stale: the directory holds a run
  made with other settings (:mod:`.opening` refuses it, or with ``--overwrite`` redoes exactly the
  stale stages).

A digest is ``sha256`` of the inputs as sorted JSON, keys whose value is ``None`` dropped, so that
a new optional setting left unset keeps the digests of directories written before it existed.
``palora compare`` digests its rows with the same function (:mod:`palora.compare.rows`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, TrainConfig, to_dict
from ..io.artifacts import RunDir, write_json
from ..report.model_card import DataFile

#: training settings that change how a stage is logged or checkpointed, not what it computes
BOOKKEEPING = ("log_every", "checkpoint_every")


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its key, what its result depends on, what it builds on, what it writes."""

    key: str
    inputs: Callable[[RunConfig], dict[str, Any]]  # settings and data-file digests it reads
    upstream: Callable[[RunConfig], list[Stage]]  # the stages whose results it reads
    outputs: Callable[[RunDir], list[Path]]  # files and folders it writes (removed when it is redone)
    #: the outputs a finished stage leaves behind (checkpoints and logs are not among them)
    leaves: Callable[[RunDir], list[Path]] = lambda rd: []


def read_stages(rd: RunDir) -> dict[str, Any]:
    return json.loads(rd.stages.read_text(encoding="utf-8")) if rd.stages.is_file() else {}


def file_digest(path: str | None) -> str | None:
    """sha256 of a file's bytes (``None`` when unset or missing)."""
    if not path or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_file(key: str, path: str | None) -> DataFile | None:
    """A data file as a run read it (its line count and sha256, for the model cards); ``None`` when unset or missing."""
    if not path or not Path(path).is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = sum(1 for line in f if line.strip())
    return DataFile(key, path, lines, file_digest(path))


def folder_digest(path: str | None, names: tuple[str, ...]) -> dict[str, str | None] | None:
    """:func:`file_digest` of the files ``names`` in the folder ``path`` (``None`` when unset)."""
    return None if not path else {n: file_digest(str(Path(path) / n)) for n in names}


def train_inputs(t: TrainConfig) -> dict[str, Any]:
    """A training section without its bookkeeping keys."""
    return {k: v for k, v in to_dict(t).items() if k not in BOOKKEEPING}


def text_inputs(cfg: RunConfig) -> dict[str, Any]:
    """How every stage turns text into tokens."""
    return {"max_length": cfg.data.max_length, "chat_template": cfg.data.chat_template}


def _without_unset(tree: Any) -> Any:
    """Drop keys whose value is ``None``: a new optional setting left unset keeps old digests valid."""
    if isinstance(tree, dict):
        return {k: _without_unset(v) for k, v in tree.items() if v is not None}
    return tree


def digest_of(tree: dict[str, Any]) -> str:
    """The digest of a tree of inputs (16 hex digits)."""
    text = json.dumps(_without_unset(tree), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest(cfg: RunConfig, stage: Stage) -> str:
    return digest_of(stage.inputs(cfg))


def _consistent(stages: dict[str, Any], cfg: RunConfig, stage: Stage) -> bool:
    record = stages[stage.key]
    upstream = record.get("upstream", {})
    return record.get("digest") == digest(cfg, stage) and all(
        upstream.get(dep.key) == stages.get(dep.key, {}).get("digest") for dep in stage.upstream(cfg)
        if dep.key in stages or dep.key in upstream
    )


def done_in(stages: dict[str, Any], cfg: RunConfig, stage: Stage) -> bool:
    """``stage`` is recorded in ``stages`` for exactly these settings, on top of stages that are done too."""
    return stage.key in stages and _consistent(stages, cfg, stage) and all(
        done_in(stages, cfg, dep) for dep in stage.upstream(cfg) if dep.key in stages)


def is_done(rd: RunDir, cfg: RunConfig, stage: Stage) -> bool:
    """:func:`done_in` this run's ``stages.json``, with every file the stage leaves present."""
    return done_in(read_stages(rd), cfg, stage) and all(p.exists() for p in stage.leaves(rd))


def record(rd: RunDir, cfg: RunConfig, stage: Stage, info: dict[str, Any]) -> None:
    """Record ``info`` (wall times, fingerprints, certificates) under the stage's key in ``stages.json``,
    with its digest and the digests of the upstream stages it read."""
    stages = read_stages(rd)
    stages[stage.key] = {**info, "digest": digest(cfg, stage),
                         "upstream": {d.key: stages[d.key].get("digest") for d in stage.upstream(cfg) if d.key in stages}}
    write_json(rd.stages, stages)


def skip_if_done(rd: RunDir, cfg: RunConfig, stage: Stage) -> dict[str, Any] | None:
    """The recorded info of a stage that is done (saying so), else ``None``."""
    if not is_done(rd, cfg, stage):
        return None
    print(f"{stage.key}: already done in {rd.root}, skipped")
    return read_stages(rd)[stage.key]
