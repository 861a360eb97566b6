"""What a run directory already holds, for which settings, and what new settings invalidate.

Every stage records in ``stages.json`` a digest of its own inputs (the configuration keys it
reads and the bytes of the data files it reads) and the digests of the stages it builds on at
the time it ran. For a configuration ``cfg`` a recorded stage is

- **done** when its digest is ``cfg``'s and the stages it builds on are still the ones it used:
  rerunning the same command skips it;
- **stale** when either differs, or when a stage it builds on is stale: the directory holds a
  run made with other settings. The CLI refuses to touch it unless ``--overwrite`` is given, in
  which case exactly the stale stages are removed (artifacts, checkpoints, their metrics lines)
  and run again.

Dependencies: ``data`` (the demo's) → ``svf`` → ``probe`` → ``inject:<method>`` for the methods
that read the probe (``palora`` and its variants, ``olora-penalty``, ``protect-top/random``);
``svf`` → ``inject:<other>``; ``svf`` and every ``inject:<method>`` → ``eval``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from ..artifacts import ADAPTER_FILES, RunDir, write_json
from ..checkpoint import discard_checkpoint
from ..config import RunConfig, TrainConfig, load, load_yaml, to_dict
from ..errors import ConfigError
from ..methods.registry import METHODS
from ..metrics_log import drop_logged_from

#: training settings that change how a stage is logged or checkpointed, not what it computes
_BOOKKEEPING = ("log_every", "checkpoint_every")


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


def _train(t: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(t).items() if k not in _BOOKKEEPING}


def folder_digest(path: str | None, names: tuple[str, ...]) -> dict[str, str | None] | None:
    """:func:`file_digest` of the files ``names`` in the folder ``path`` (``None`` when unset)."""
    return None if not path else {n: file_digest(str(Path(path) / n)) for n in names}


def _svf_inputs(cfg: RunConfig) -> dict[str, Any]:
    """The SVF settings that shape the expert: the objective's own optimisation only, and no
    ``objective`` key for ``sft`` (so a run made before the objective existed keeps its digest)."""
    svf = {k: v for k, v in to_dict(cfg.svf).items() if k not in ("train", "objective", "reinforce", "init_from")}
    if cfg.svf.init_from:  # the starting scales, by their bytes (absent: the digest of older runs)
        svf["init_from"] = file_digest(cfg.svf.init_from)
    if cfg.svf.objective == "sft":
        return {**svf, "train": _train(cfg.svf.train)}
    return {**svf, "objective": cfg.svf.objective, "reinforce": _train(cfg.svf.reinforce),
            "checker": cfg.data.skill_checker}


def _extra_expert(run: str) -> dict[str, Any]:
    """What another run's expert contributes to a combined probe: its scales and its skill data."""
    root = Path(run)
    skill_train = None
    try:
        skill_train = load(root / "config.yaml").data.skill_train
    except ConfigError:  # a missing or broken config: the probe itself says so; the digest records its absence
        pass
    return {"run": str(root.resolve()), "svf_expert": file_digest(str(root / "svf_expert.safetensors")),
            "skill_train": file_digest(skill_train)}


def _probe_inputs(cfg: RunConfig) -> dict[str, Any]:
    """Probe settings, and the other skills' data and experts when there are some (none: the digest
    of older runs, which had neither key)."""
    p = cfg.probe
    probe = {k: v for k, v in to_dict(p).items() if k != "skill_data"}
    if not p.extra_runs and not p.skill_data:
        return {k: v for k, v in probe.items() if k not in ("extra_runs", "combine", "combine_weights")}
    probe["extra_runs"] = [_extra_expert(r) for r in p.extra_runs]
    if p.skill_data:
        probe["skill_data"] = [file_digest(f) for f in p.skill_data]
    return probe


def _inject_inputs(cfg: RunConfig, method: str) -> dict[str, Any]:
    """The injection settings, and what this method alone reads (so that, e.g., the penalty's weight
    or the activation basis's statistics leave the other methods' digests alone)."""
    inject = {k: v for k, v in to_dict(cfg.inject).items()
              if k not in ("methods", "protect_adapter_side", "penalty_weight")}
    inject["train"] = _train(cfg.inject.train)
    spec = METHODS[method]
    if spec.penalty:
        inject["penalty_weight"] = cfg.inject.penalty_weight
    if spec.protect == "activation":  # the covariance of the skill data, through the expert
        p = cfg.probe
        inject["activation"] = {"rule": p.rule, "fraction": p.fraction, "k": p.k, "threshold": p.threshold,
                                "energy": p.energy, "stat_batches": p.stat_batches,
                                "stat_batch_size": p.stat_batch_size, "skill_train": file_digest(cfg.data.skill_train)}
    if cfg.inject.protect_adapter:  # the earlier round's adapter, by its bytes, like a data file
        inject["protect_adapter_side"] = cfg.inject.protect_adapter_side
        inject["protect_adapter_files"] = folder_digest(cfg.inject.protect_adapter, ADAPTER_FILES)
    return inject


def stage_inputs(cfg: RunConfig, key: str) -> dict[str, Any]:
    """The settings and data a stage's result depends on."""
    d = cfg.data
    text = {"max_length": d.max_length, "chat_template": d.chat_template}
    if key == "data":
        return {"data_gen": to_dict(cfg.data_gen), "model": to_dict(cfg.model)}
    if key == "svf":
        return {"model": to_dict(cfg.model), "seed": cfg.seed, "skill_train": file_digest(d.skill_train),
                "svf": _svf_inputs(cfg), **text}
    if key == "probe":
        return {"probe": _probe_inputs(cfg), "skill_train": file_digest(d.skill_train), "seed": cfg.seed, **text}
    if key.startswith("inject:"):
        return {"inject": _inject_inputs(cfg, key.removeprefix("inject:")), "knowledge_train": file_digest(d.knowledge_train), "seed": cfg.seed,
                "save_merged": cfg.save_merged, **text}
    if key == "eval":
        files = {k: file_digest(getattr(d, k)) for k in ("skill_eval", "knowledge_eval", "known_eval")}
        return {"eval": to_dict(cfg.eval), "model": to_dict(cfg.model), "methods": cfg.inject.methods,
                "checkers": [d.skill_checker, d.knowledge_checker], **files, **text}
    raise ValueError(f"unknown stage {key}")


def depends_on(cfg: RunConfig, key: str) -> list[str]:
    if key == "svf":
        return ["data"]
    if key == "probe":
        return ["svf"]
    if key.startswith("inject:"):  # the methods protecting the probe's components (or as many) read it
        return ["svf", "probe"] if METHODS[key.removeprefix("inject:")].protect in ("probe", "top", "random") else ["svf"]
    if key == "eval":
        return ["svf", *[f"inject:{m}" for m in cfg.inject.methods]]
    return []


def _without_unset(tree: Any) -> Any:
    """Drop keys whose value is ``None``: a new optional setting left unset keeps old digests valid."""
    if isinstance(tree, dict):
        return {k: _without_unset(v) for k, v in tree.items() if v is not None}
    return tree


def digest(cfg: RunConfig, key: str) -> str:
    text = json.dumps(_without_unset(stage_inputs(cfg, key)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(rd: RunDir, cfg: RunConfig, key: str) -> dict[str, Any]:
    """The record fields that make ``key`` checkable later: its digest and its upstream digests."""
    stages = read_stages(rd)
    return {"digest": digest(cfg, key),
            "upstream": {dep: stages[dep].get("digest") for dep in depends_on(cfg, key) if dep in stages}}


def _consistent(stages: dict[str, Any], cfg: RunConfig, key: str) -> bool:
    record = stages[key]
    upstream = record.get("upstream", {})
    return record.get("digest") == digest(cfg, key) and all(
        upstream.get(dep) == stages.get(dep, {}).get("digest") for dep in depends_on(cfg, key)
        if dep in stages or dep in upstream
    )


def _is_stage(key: str) -> bool:
    return key in ("data", "svf", "probe", "eval") or key.startswith("inject:")


def _done(stages: dict[str, Any], cfg: RunConfig, key: str) -> bool:
    return key in stages and _consistent(stages, cfg, key) and all(
        _done(stages, cfg, dep) for dep in depends_on(cfg, key) if dep in stages)


def is_done(rd: RunDir, cfg: RunConfig, key: str) -> bool:
    """``key`` is recorded for exactly these settings, on top of stages that are done too."""
    return _done(read_stages(rd), cfg, key)


def stale_stages(rd: RunDir, cfg: RunConfig) -> list[str]:
    """Recorded stages that ``cfg`` would compute differently, with everything built on them."""
    stages = read_stages(rd)
    return [k for k in stages if _is_stage(k) and not _done(stages, cfg, k)]


def say_done(rd: RunDir, key: str) -> None:
    print(f"{key}: already done in {rd.root}, skipped")


def _outputs(rd: RunDir, key: str) -> list[Path]:
    if key == "data":
        return [rd.data]
    if key == "svf":
        return [rd.svf_expert, rd.expert_model, rd.checkpoint("svf"), rd.tensorboard("svf")]
    if key == "probe":
        return [rd.probe_stats, rd.subspace]
    if key.startswith("inject:"):
        return [rd.method(key.removeprefix("inject:")), rd.checkpoint(key), rd.tensorboard(key)]
    if key == "eval":
        return [rd.report_json, rd.report_md, rd.model_card, rd.plots, rd.evaluations]
    return []


def discard(rd: RunDir, keys: list[str]) -> None:
    """Remove the stages ``keys``: their files, checkpoints, records, metrics lines and TensorBoard runs."""
    if not keys:
        return
    for key in keys:
        for path in _outputs(rd, key):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        discard_checkpoint(rd.checkpoint(key))
        drop_logged_from(rd.metrics, key, 1)  # every step of the stage
    stages = {k: v for k, v in read_stages(rd).items() if k not in keys}
    write_json(rd.stages, stages)


#: what atomic_path (tempfile.mkdtemp(prefix=".<name>.")) leaves behind when a process is killed
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}$")


def remove_partial_writes(rd: RunDir) -> None:
    """Delete the temporaries of writes a killed process never finished (never a finished file)."""
    folders = [rd.root, rd.root / "methods", *(rd.root / "methods").glob("*"), rd.evaluations, rd.plots]
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_dir() and _TEMPORARY.match(path.name):
                    shutil.rmtree(path, ignore_errors=True)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(rd: RunDir, cfg: RunConfig) -> list[str]:
    """Configuration keys whose value differs from the run directory's ``config.yaml``."""
    if not rd.config.is_file():
        return []
    try:
        old = _flat(load_yaml(rd.config))
    except Exception:  # an unreadable old config: the stage digests still decide
        return []
    new = _flat(to_dict(cfg))
    return [k for k in new if k in old and old[k] != new[k] and k != "out"]


def open_run(rd: RunDir, cfg: RunConfig, overwrite: bool, writer: bool = True) -> None:
    """Before a command writes anything into ``rd``: refuse another run's directory, or make room.

    Raises :class:`ConfigError` when a finished stage was made with other settings and
    ``overwrite`` is off; with ``overwrite``, removes exactly the stale stages. Always removes the
    temporaries of writes a killed process left behind. Only the ``writer`` (the main process)
    removes anything; every process checks.
    """
    stale = stale_stages(rd, cfg)
    if stale and not overwrite:
        keys = changed_keys(rd, cfg)
        what = f" (changed: {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})" if keys else ""
        raise ConfigError(
            f"{rd.root} holds a run made with other settings{what}; its stages {', '.join(stale)} would change: "
            f"use another --out, or --overwrite to redo them"
        )
    if writer:
        discard(rd, stale)
        remove_partial_writes(rd)
