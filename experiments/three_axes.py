"""Issue 19's three axes per method, over seeds: skill retention, new-fact recall, old knowledge.

    python experiments/three_axes.py runs/keep/seed0 runs/keep/seed1 runs/keep/seed2 [--json OUT]
    python experiments/three_axes.py runs/long/seed0 runs/long/seed1 runs/long/seed2 --split val

Each directory holds the ``report.json`` of one seed (test splits; with ``--split val`` the
``validation.json`` of ``experiments/validate.py`` instead): the expert and every method; a
sibling ``<dir>-<variant>`` (``-early`` of ``experiments/keep.sh``, ``-r50`` of
``experiments/long.sh``, ...) adds its methods as ``method (variant)``, measured against its own
expert (the same). Per method, mean ± standard error over seeds (one seed: its binomial standard
error):

* skill retention = skill accuracy / the expert's (same seed);
* new-fact recall = the injected facts recalled on unseen question templates (greedy generation);
* old knowledge = held-out known facts answered / the expert's (``known_facts.jsonl``, or
  ``known_val.jsonl`` with ``--split val``: facts the base answers, of countries whose facts no
  protection saw).

The goal (issue 19): retention ≥ 95 %, recall ≥ 80 %, old knowledge ≥ 90 %, at once; the last
column names the axes a method misses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from verdict import mean_se, pct, seed_rows

GOAL = {"retention": 0.95, "recall": 0.80, "old": 0.90}


def seed_metrics(rows: dict[str, dict], m: str) -> dict[str, tuple[float, float]]:
    expert, row = rows["expert"], rows[m]
    e_skill, e_known = expert["skill_accuracy"], expert["known_recall"]
    return {"retention": (row["skill_accuracy"] / e_skill, row["skill_stderr"] / e_skill),
            "recall": (row["knowledge_recall"], row["knowledge_stderr"]),
            "old": (row["known_recall"] / e_known, row["known_stderr"] / e_known),
            "old_recall": (row["known_recall"], row["known_stderr"])}


def runs_rows(run: Path, split: str) -> dict[str, dict]:
    def rows_of(d: Path) -> dict[str, dict]:
        if split == "test":
            return seed_rows(d)
        return {row["name"]: row for row in json.loads((d / "validation.json").read_text())["rows"]}

    rows = rows_of(run)
    name = "report.json" if split == "test" else "validation.json"
    for sibling in sorted(run.parent.glob(f"{run.name}-*")):
        if (sibling / name).is_file():
            variant = sibling.name[len(run.name) + 1:]
            rows.update({f"{m} ({variant})": r for m, r in rows_of(sibling).items() if m not in ("base", "expert")})
    return rows


def table(runs: list[Path], split: str = "test") -> dict[str, dict]:
    per_seed = [runs_rows(r, split) for r in runs]
    methods = [m for m in per_seed[0] if m != "base" and all(m in rows for rows in per_seed)]
    out = {}
    for m in methods:
        seeds = [seed_metrics(rows, m) for rows in per_seed]
        out[m] = {"seeds": len(seeds), **{k: mean_se([s[k][0] for s in seeds], seeds[0][k][1]) for k in seeds[0]}}
    return out


def misses(stats: dict) -> str:
    failed = [k for k, bar in GOAL.items() if stats[k][0] < bar]
    return "met" if not failed else ", ".join(failed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", choices=("test", "val"), default="test",
                    help="test: report.json; val: validation.json (experiments/validate.py)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    t = table(args.runs, args.split)

    print("| method | seeds | skill retention % | new-fact recall % | old knowledge % of the expert's | "
          "old facts answered % | goal missed on |")
    print("|---|---|---|---|---|---|---|")
    for m, s in t.items():
        print(f"| {m} | {s['seeds']} | {pct(s['retention'])} | {pct(s['recall'])} | {pct(s['old'])} | "
              f"{pct(s['old_recall'])} | {'–' if m == 'expert' else misses(s)} |")
    if args.json:
        args.json.write_text(json.dumps(t, indent=1))


if __name__ == "__main__":
    main()
