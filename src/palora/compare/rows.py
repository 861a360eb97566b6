"""``compare.jsonl``: one row per job, appended as it finishes, each with the digest of its settings.

A row's digest (``settings``) is the engine's (:func:`palora.stages.engine.digest_of`) over the
digests of the stages its model went through, computed for the job's own configuration (its seed,
rate and protected share): the SVF expert, the probe of the method's basis, the method's inject
stage, and what the scores depend on (:func:`palora.stages.evaluate.scoring_inputs`, validation
files included, and the generation's length and limit; not its batch size or lm-eval's settings). A setting a stage reads is in its row's digest with no list kept here: a row is
reused exactly when the stage it ran would be. Rows of other settings stay in the file, ignored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..io.artifacts import atomic_path
from ..methods.registry import METHODS
from ..stages import inject, probe, svf
from ..stages.engine import digest, digest_of
from ..stages.evaluate import scoring_inputs
from .plan import Job

#: the data files a row's scores depend on
SCORED_FILES = ("skill_val", "knowledge_val", "skill_eval", "knowledge_eval", "known_eval")
#: rows carry it; rows without it were digested by palora 0.1 (another digest of the settings)
DIGESTS = 2


def job_config(cfg: RunConfig, job: Job) -> RunConfig:
    """``cfg`` with the job's seed, learning rate and protected share (rule ``fraction``)."""
    train = dataclasses.replace(cfg.inject.train, lr=job.lr) if job.lr is not None else cfg.inject.train
    probe_cfg = cfg.probe if job.fraction is None else dataclasses.replace(cfg.probe, rule="fraction",
                                                                           fraction=job.fraction)
    return dataclasses.replace(cfg, seed=job.seed, probe=probe_cfg, inject=dataclasses.replace(cfg.inject, train=train))


def job_digest(cfg: RunConfig, job: Job) -> str:
    jcfg = job_config(cfg, job)
    method = METHODS[job.method]
    scores = {**scoring_inputs(jcfg, SCORED_FILES), "generation": [jcfg.eval.max_new_tokens, jcfg.eval.limit]}
    tree: dict[str, Any] = {"svf": digest(jcfg, svf.STAGE), "scores": scores}
    if method.probe_basis is not None:
        tree["probe"] = digest(jcfg, probe.stage_for(method.probe_basis))
    if method.trains:
        tree["inject"] = digest(jcfg, inject.stage_for(job.method))
    return digest_of(tree)


def _job(row: dict[str, Any]) -> Job:
    return Job(row["seed"], row["method"], row["lr"], row["fraction"], row.get("phase", ""))


class Rows:
    """The rows of ``compare.jsonl`` made with this comparison's settings, appended one at a time."""

    def __init__(self, path: Path, cfg: RunConfig):
        self.path, self.cfg = path, cfg
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        if lines and not _parses(lines[-1]):  # a row cut short by a kill: measured again
            lines = lines[:-1]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        every = [json.loads(line) for line in lines]
        if every and not any(r.get("digests") == DIGESTS for r in every):
            raise ConfigError(f"{path} holds {len(every)} rows of an earlier palora, whose settings were digested "
                              "another way: move it away to compare again (the experts in seed*/ are reused)")
        self.rows = [r for r in every if r.get("method") in METHODS and r.get("settings") == self.digest(_job(r))]
        self.ignored = len(every) - len(self.rows)

    def digest(self, job: Job) -> str:
        return job_digest(self.cfg, job)

    def has(self, job: Job) -> bool:
        return any(_job(r).key() == job.key() for r in self.rows)

    def add(self, row: dict[str, Any]) -> None:
        row = {**row, "settings": self.digest(_job(row)), "digests": DIGESTS}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.append(row)


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True
