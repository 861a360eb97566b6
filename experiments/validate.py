"""Score a run's expert and injected methods on the VALIDATION splits, where settings are chosen.

    python experiments/validate.py runs/k2/seed0 runs/k2/seed0-long ... [--quiet]

For each run directory (made by ``palora demo`` or ``palora run``; its ``config.yaml`` names the
files), the expert and every finished ``inject:*`` method are loaded as the eval stage loads them
and scored by greedy generation on ``data.skill_val``, ``data.knowledge_val`` and
``data.known_val`` (the validation split of the known facts, no protection sees it). The rows,
shaped as ``report.json``'s (``skill_accuracy``, ``knowledge_recall``, ``known_recall`` and their
standard errors), go to ``<run>/validation.json``; a run already scored is skipped unless its
methods changed. ``experiments/three_axes.py --split val`` reads them. The test files are not read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from palora.config import load
from palora.evaluation import evaluate_sets, evaluation_sets
from palora.io.artifacts import RunDir, write_json
from palora.io.models import load_model, load_tokenizer
from palora.stages.engine import read_stages
from palora.stages.evaluate import check_run, load_method


def validate(run: Path, progress: bool) -> Path:
    cfg = load(run / "config.yaml")
    rd = RunDir(run)
    stages = read_stages(rd)
    methods = [m for m in cfg.inject.methods if f"inject:{m}" in stages]
    out = run / "validation.json"
    if out.is_file() and [r["name"] for r in json.loads(out.read_text())["rows"]] == ["expert", *methods]:
        print(f"{out}: already scored, skipped")
        return out
    if not cfg.data.known_val:
        raise SystemExit(f"{run}: data.known_val is not set (a run of palora 0.x before the validation split)")
    sets = evaluation_sets(cfg, "val", known_val=True)
    check_run(cfg, rd, methods)
    tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
    rows = []
    for name in ["expert", *methods]:
        start = time.perf_counter()
        model = load_model(cfg.model, path=str(rd.expert_model)) if name == "expert" else load_method(cfg, rd, name)
        s = evaluate_sets(model, tok, sets, cfg, desc=f"val {name}", progress=progress)
        rows.append({"name": name, "seed": cfg.seed, "skill_accuracy": s["skill"].accuracy,
                     "skill_stderr": s["skill"].stderr, "knowledge_recall": s["knowledge"].accuracy,
                     "knowledge_stderr": s["knowledge"].stderr, "known_recall": s["known"].accuracy,
                     "known_stderr": s["known"].stderr, "n_skill": s["skill"].n, "n_knowledge": s["knowledge"].n,
                     "n_known": s["known"].n, "eval_time_s": round(time.perf_counter() - start, 2)})
        print(f"{run} {name}: skill {rows[-1]['skill_accuracy']:.3f}, recall {rows[-1]['knowledge_recall']:.3f}, "
              f"known {rows[-1]['known_recall']:.3f}")
    write_json(out, {"split": "val", "files": {k: getattr(cfg.data, k) for k in ("skill_val", "knowledge_val",
                                                                                  "known_val")}, "rows": rows})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    for run in args.runs:
        validate(run, progress=not args.quiet)


if __name__ == "__main__":
    main()
