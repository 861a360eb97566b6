"""``palora run`` and ``palora demo``: every stage into one run directory, then the evaluation.

``run``: svf → the probes the methods read → inject (each method) → eval. ``demo``: the same on
the embedded default, after writing the demo's data sets into ``<out>/data/`` (the ``data``
stage); the configuration already points there (``palora/configs/demo.yaml``, chosen on the
validation splits).
"""

from __future__ import annotations

from ..config import RunConfig
from ..io.artifacts import RunDir
from ..training.distributed import barrier, is_main
from . import data
from .engine import record, skip_if_done
from .evaluate import load_eval_sets, run_eval
from .inject import run_inject
from .probe import bases, run_probe
from .svf import run_svf


def run_all(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    load_eval_sets(cfg)  # a bad evaluation file is refused before hours of training, not after
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
