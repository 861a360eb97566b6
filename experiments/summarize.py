"""Mean ± standard error over seeds of ``results.jsonl`` from ``sweep.py`` (retention vs the
expert of the same seed; old-fact retention vs nothing: the known facts are those the base knew).

    python experiments/summarize.py OUT_DIR/results.jsonl [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.results)]
    expert = {r["seed"]: r for r in rows if r["variant"] == "expert"}
    by = defaultdict(list)
    for r in rows:
        by[r["variant"]].append(r)
    print("| variant | seeds | skill acc | retention | new-fact recall | old-fact recall |")
    print("|---|---|---|---|---|---|")
    for name, rs in by.items():
        cols = []
        for key in ("skill", "retention", "recall", "known"):
            xs = [r["skill"] / expert[r["seed"]]["skill"] if key == "retention" else r[key] for r in rs
                  if r["seed"] in expert]
            m, se = mean_se(xs)
            cols.append(f"{m:.3f} ± {se:.3f}")
        print(f"| {name} | {len(rs)} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
