"""Old facts answered per relation, seeds pooled (test split): the share of each relation's held-out
known facts a model answers, read from the runs' ``evaluations/<model>.known.jsonl``.

    python experiments/relations.py runs/s300/seed0 runs/s300/seed1 runs/s300/seed2

The facts of ``data/known_facts.jsonl`` carry their relation; the evaluation file holds one line
per fact, in the same order (checked by prompt). Prints a markdown table, one row per model.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from palora.datasets.known_facts import RELATIONS
from palora.io.data import read_jsonl as jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    models = sorted({p.name.removesuffix(".known.jsonl") for run in args.runs
                     for p in (run / "evaluations").glob("*.known.jsonl")} - {"base"},
                    key=lambda m: (m != "expert", m))
    counts: dict[str, dict[str, list[int]]] = {m: defaultdict(lambda: [0, 0]) for m in models}
    for run in args.runs:
        facts = jsonl(run / "data" / "known_facts.jsonl")
        for model in models:
            answers = jsonl(run / "evaluations" / f"{model}.known.jsonl")
            if [a["prompt"] for a in answers] != [f["prompt"] for f in facts]:
                raise SystemExit(f"{run}: {model}'s old-fact answers are not those of data/known_facts.jsonl")
            for fact, answer in zip(facts, answers, strict=True):
                counts[model][fact["relation"]][0] += bool(answer["correct"])
                counts[model][fact["relation"]][1] += 1
    per_seed = {r: counts[models[0]][r][1] // len(args.runs) for r in RELATIONS}
    print("| model | " + " | ".join(f"{r} ({per_seed[r]})" for r in RELATIONS) + " |")
    print("|---|" + "---|" * len(RELATIONS))
    for model in models:
        cells = [f"{100 * k / n:.1f}" if n else "–" for k, n in (counts[model][r] for r in RELATIONS)]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
