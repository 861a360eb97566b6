"""Mean ± standard error over seeds of ``results.jsonl`` from ``sweep.py``.

    python experiments/summarize.py OUT_DIR/results.jsonl

Retention is skill accuracy / the accuracy of the expert of the same seed; "recall vs LoRA" is a
variant's new-fact recall / plain LoRA's of the same seed. The standard error is over seeds
(each seed has its own expert, LoRA initialisation and data order).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict


def mean_se(xs: list[float]) -> str:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return f"{m:.3f}"
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))
    return f"{m:.3f} ± {se:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.results)]
    expert = {r["seed"]: r for r in rows if r["variant"] == "expert"}
    lora = {r["seed"]: r for r in rows if r["variant"] == "lora"}
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["seed"] in expert:
            by[r["variant"]].append(r)
    print("| variant | seeds | skill accuracy | retention | new-fact recall | recall / LoRA's | old-fact recall |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in by.items():
        ret = [r["skill"] / expert[r["seed"]]["skill"] for r in rs]
        rel = [r["recall"] / lora[r["seed"]]["recall"] for r in rs if r["seed"] in lora and lora[r["seed"]]["recall"]]
        print(f"| {name} | {len(rs)} | {mean_se([r['skill'] for r in rs])} | {mean_se(ret)} | "
              f"{mean_se([r['recall'] for r in rs])} | {mean_se(rel) if rel and name != 'expert' else ''} | "
              f"{mean_se([r['known'] for r in rs])} |")


if __name__ == "__main__":
    main()
