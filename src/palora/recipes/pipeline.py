"""``palora run``: every stage into one run directory, then the evaluation and the report."""

from __future__ import annotations

from ..artifacts import RunDir
from ..config import RunConfig
from ..methods import METHODS
from .evaluate import load_eval_sets, run_eval
from .inject import run_inject
from .probe import run_probe
from .svf import run_svf


def run_all(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    load_eval_sets(cfg)  # a bad evaluation file is refused before hours of training, not after
    run_svf(cfg, rd, progress)
    if any(METHODS[m].protect in ("probe", "top", "random") for m in cfg.inject.methods):
        run_probe(cfg, rd, progress)
    run_inject(cfg, rd, progress)
    return run_eval(cfg, rd, progress)
