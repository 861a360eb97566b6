"""``palora demo``: the embedded default, end to end on the packaged SmolLM2-135M-Instruct.

Writes the demo's data sets into ``<out>/data/`` (once), points the configuration at them (skill
and fact *test* splits, the capitals the base model knows), and runs the same pipeline as
``palora run``: base -> SVF expert -> probe -> injection with each method -> evaluation.
The settings live in ``palora/configs/demo.yaml``; they were chosen on the validation splits.
"""

from __future__ import annotations

from ..artifacts import RunDir
from ..config import RunConfig
from ..distributed import barrier, is_main
from .common import record_stage
from .data import check_skill_checker, run_data
from .pipeline import run_all
from .run_state import is_done, say_done

#: where the demo reads each data set, relative to its run directory (``palora data`` writes them)
DATA_FILES = {
    "data.skill_train": "skill_train.jsonl",
    "data.skill_eval": "skill_test.jsonl",
    "data.knowledge_train": "knowledge_train.jsonl",
    "data.knowledge_eval": "knowledge_test.jsonl",
    "data.known_eval": "known_facts.jsonl",
}


def run_demo(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    """``cfg.data`` already points into ``<out>/data/`` (the CLI sets it from :data:`DATA_FILES`)."""
    check_skill_checker(cfg)
    if is_done(rd, cfg, "data"):
        say_done(rd, "data")
    elif is_main():
        info = run_data(cfg, RunDir(rd.data), progress)
        record_stage(rd, cfg, "data", {"wall_time_s": info["wall_time_s"]})
    barrier()
    return run_all(cfg, rd, progress)
