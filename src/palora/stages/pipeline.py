"""``palora run`` and ``palora demo``: every stage into one run directory, then the evaluation.

``run``: svf → the probes the methods read → inject (each method) → eval. ``demo``: the same on
the embedded default, after writing the demo's data sets into ``<out>/data/`` (the ``data``
stage); the configuration already points there (``palora/configs/demo.yaml``, chosen on the
validation splits).
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, require
from ..errors import ArtifactError
from ..io.artifacts import ADAPTER_FILES, RunDir
from ..io.data import load_train
from ..protection import other_run_data
from ..training.distributed import barrier, is_main
from . import data
from .engine import record, skip_if_done
from .evaluate import load_eval_sets, run_eval
from .inject import run_inject
from .probe import bases, run_probe
from .svf import run_svf


def check_inputs(cfg: RunConfig) -> None:
    """Read and check every input file of every stage ``palora run`` runs, before the first starts
    (``FILE:LINE`` errors): a bad file is refused in a second, not after hours of training."""
    load_train(require(cfg.data.skill_train, "data.skill_train", "--skill-train"))
    load_train(require(cfg.data.knowledge_train, "data.knowledge_train", "--knowledge-train"))
    for path in cfg.probe.skill_data:
        load_train(path)
    for run in cfg.probe.extra_runs:
        other_run_data(run)
    if cfg.inject.protect_adapter:
        missing = [f for f in ADAPTER_FILES if not (Path(cfg.inject.protect_adapter) / f).is_file()]
        if missing:
            raise ArtifactError(f"inject.protect_adapter={cfg.inject.protect_adapter}: no {missing[0]} (a peft "
                                "adapter folder, methods/<method>/adapter of an earlier run)")
    load_eval_sets(cfg)


def run_all(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    check_inputs(cfg)
    run_svf(cfg, rd, progress)
    if bases(cfg):
        run_probe(cfg, rd, progress)
    run_inject(cfg, rd, progress)
    return run_eval(cfg, rd, progress)


def run_demo(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    data.check_skill_checker(cfg)
    if skip_if_done(rd, cfg, data.STAGE) is None and is_main():
        info = data.run_data(cfg, RunDir(rd.data), progress)
        record(rd, cfg, data.STAGE, {"wall_time_s": info["wall_time_s"]})
    barrier()
    return run_all(cfg, rd, progress)
