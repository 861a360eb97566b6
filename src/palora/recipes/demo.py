"""``palora demo``: the embedded default, end to end on the packaged SmolLM2-135M-Instruct.

Writes the demo's data sets into ``<out>/data/`` (once), points the configuration at them (skill
and fact *test* splits, the capitals the base model knows), and runs the same pipeline as
``palora run``: base -> SVF expert -> probe -> injection with each method -> evaluation.
The settings live in ``palora/configs/demo.yaml``; they were chosen on the validation splits.
"""

from __future__ import annotations

import dataclasses

from ..artifacts import RunDir
from ..config import RunConfig, save
from .data import run_data
from .common import record_stage
from .pipeline import run_all


def run_demo(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    data = RunDir(rd.root / "data")
    if not (data.root / "manifest.json").is_file():
        record_stage(rd, "data", {"wall_time_s": run_data(cfg, data, progress)["wall_time_s"]})
    d = data.root
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data,
        skill_train=str(d / "skill_train.jsonl"), skill_eval=str(d / "skill_test.jsonl"),
        knowledge_train=str(d / "knowledge_train.jsonl"), knowledge_eval=str(d / "knowledge_test.jsonl"),
        known_eval=str(d / "known_facts.jsonl"),
    ))
    save(cfg, rd.config)
    return run_all(cfg, rd, progress)
