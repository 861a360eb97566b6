"""The comparison's table, from the rows ``palora compare`` writes (``compare.jsonl``).

A row is one trained (or, for ``svf``, evaluated) method: ``seed``, ``method``, ``lr``,
``fraction`` (the protected share; ``None`` = the probe's own), ``phase`` and per split
(``val``, ``test``) the skill accuracy, new-fact recall and old-fact recall. The retention of a
row is its skill accuracy over the ``svf`` row's (the expert) of the same seed and split.

Across seeds the table gives ``mean ± std`` with the sample standard deviation
(``std = √(Σ(x − x̄)² / (n − 1))``, ``None`` for one seed) and ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..core.mistakes import KINDS

Row = dict[str, Any]

#: what a row's ``peak_memory_mb`` measures (its ``peak_memory_kind``): on CUDA the allocated
#: tensors, model included; on CPU the resident set the job added above its start (one process runs
#: every job and keeps what earlier ones left, so its absolute peak is no method's number; rows of
#: older versions, kind "process resident set", hold that absolute peak and the table skips them)
CUDA_PEAK = "cuda allocated"
CPU_PEAK = "resident set added by the job"
PER_JOB_PEAKS = (CUDA_PEAK, CPU_PEAK)


def mean_std(values: Iterable[float]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std, n)``; std is ``None`` for fewer than two values, both for none."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return None, None, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, None, n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)), n


def with_retention(rows: Sequence[Row]) -> list[Row]:
    """Each row with ``retention`` per split: skill / the same seed's expert (``svf`` row) skill."""
    expert = {(r["seed"], split): r[split]["skill"] for r in rows if r["method"] == "svf"
              for split in ("val", "test") if r.get(split)}
    out = []
    for r in rows:
        r = {**r}
        for split in ("val", "test"):
            if r.get(split):
                e = expert.get((r["seed"], split))
                r[split] = {**r[split], "retention": None if not e else r[split]["skill"] / e}
        out.append(r)
    return out


#: what each ``compare.select`` rule maximises on the validation split
SCORE_RULES = {"balanced": "(retention + recall) / 2", "recall": "new-fact recall"}


def selection_score(split: dict[str, float], rule: str) -> float:
    """The validation score a learning rate is chosen by: ``(retention + recall) / 2`` or recall.

    Where the expert scores 0 (retention undefined) the skill accuracy stands in for retention.
    """
    if rule == "recall":
        return split["recall"]
    kept = split["retention"] if split.get("retention") is not None else split["skill"]
    return (kept + split["recall"]) / 2


def choose_lr(rows: Sequence[Row], method: str, seed: int, rule: str) -> float | None:
    """The learning rate of ``method``'s best validation row on ``seed`` (protected share: the probe's);
    ties go to the smaller rate. ``None`` until the seed's expert has its validation row."""
    if not any(r["method"] == "svf" and r["seed"] == seed and r.get("val") for r in rows):
        return None
    grid = [r for r in rows if r["method"] == method and r["seed"] == seed and r["fraction"] is None
            and r.get("val")]
    if not grid:
        return None
    return max(grid, key=lambda r: (selection_score(r["val"], rule), -r["lr"]))["lr"]


def summarize(rows: Sequence[Row], methods: Sequence[str], chosen: dict[str, float | None]) -> list[Row]:
    """One line per method at its chosen learning rate (test split): mean, std and n over seeds."""
    table = []
    for m in methods:
        mine = [r for r in rows if r["method"] == m and r["fraction"] is None and r.get("test")
                and (m == "svf" or r["lr"] == chosen.get(m))]
        if not mine:
            continue
        line: Row = {"method": m, "lr": chosen.get(m), "seeds": sorted(r["seed"] for r in mine)}
        for key in ("skill", "retention", "recall", "known"):
            line[key] = mean_std(r["test"].get(key) for r in mine)
        for key in ("trainable_parameters", "train_time_s"):
            line[key] = mean_std(r.get(key) for r in mine)[0]
        counts = [r["test"].get("skill_mistakes") for r in mine]
        if all(c is not None for c in counts):  # wrong skill answers by kind, summed over the seeds
            line["skill_mistakes"] = {k: sum(c.get(k, 0) for c in counts) for k in KINDS}
            line["n_skill"] = sum(r["test"]["n_skill"] for r in mine)
        line["peak_memory_mb"] = mean_std(r.get("peak_memory_mb") for r in mine
                                          if r.get("peak_memory_kind") in PER_JOB_PEAKS)[0]
        table.append(line)
    return table


def _pm(stat: tuple[float | None, float | None, int], scale: float = 100.0) -> str:
    mean, std, _ = stat
    if mean is None:
        return "–"
    return f"{scale * mean:.1f}" if std is None else f"{scale * mean:.1f} ± {scale * std:.1f}"


def markdown(table: Sequence[Row]) -> str:
    head = ("| method | lr | seeds | skill % | retention % | new-fact recall % | old-fact recall % | "
            "trainable params | train s | peak MB |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for t in table:
        lr = "–" if t["lr"] is None else f"{t['lr']:g}"
        cost = [("–" if t[k] is None else f"{t[k]:,.0f}") for k in ("trainable_parameters", "train_time_s",
                                                                    "peak_memory_mb")]
        lines.append(f"| {t['method']} | {lr} | {len(t['seeds'])} | {_pm(t['skill'])} | {_pm(t['retention'])} | "
                     f"{_pm(t['recall'])} | {_pm(t['known'])} | {' | '.join(cost)} |")
    return head + "\n".join(lines) + "\n"


def budget_curves(rows: Sequence[Row], methods: Sequence[str], probe_fraction: float,
                  chosen: dict[str, float | None], seeds: Sequence[int]) -> dict[str, list[Row]]:
    """Per method: test retention and recall (mean, std, n over ``seeds``) against the protected share.

    The points of a curve differ by their budget and nothing else: only the sweep's own ``seeds``
    count, at every share (the main table's other seeds would move the probe's own share and share
    0 alone), and share 0 is plain LoRA at the method's own chosen rate (protecting nothing is
    LoRA; at LoRA's chosen rate it would differ by the rate too), absent where no such LoRA row
    exists. The probe's own share comes from the main rows.
    """
    curves = {}
    for m in methods:
        points: dict[float, list[Row]] = {}
        for r in rows:
            if r.get("test") is None or r["seed"] not in seeds:
                continue
            if r["method"] == m and r["lr"] == chosen.get(m):
                f = probe_fraction if r["fraction"] is None else r["fraction"]
                points.setdefault(f, []).append(r)
            elif r["method"] == "lora" and r["fraction"] is None and r["lr"] == chosen.get(m):
                points.setdefault(0.0, []).append(r)
        curves[m] = [{"fraction": f, "retention": mean_std(r["test"]["retention"] for r in rs),
                      "recall": mean_std(r["test"]["recall"] for r in rs)} for f, rs in sorted(points.items())]
    return curves


def seeds_label(seeds: Sequence[int]) -> str:
    """``seed 0`` or ``seeds 0, 1, 2``: the seeds a report's numbers come from."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def budget_markdown(curves: dict[str, list[Row]]) -> str:
    """One line per (method, share): test retention and recall, and how many seeds each point has."""
    head = "| method | share protected | seeds | retention % | new-fact recall % |\n|---|---|---|---|---|\n"
    out = [f"| {m} | {p['fraction']:g} | {p['recall'][2]} | {_pm(p['retention'])} | {_pm(p['recall'])} |"
           for m, points in curves.items() for p in points]
    return head + "\n".join(out) + "\n"


def grid_lines(rows: Sequence[Row], methods: Sequence[str], seed: int, rule: str,
               chosen: dict[str, float | None]) -> list[Row]:
    """The learning-rate grid on ``seed``'s validation splits: one line per (method, rate) tried.

    Each line has the validation ``retention``, ``recall``, the ``score`` the rate is chosen by
    (:func:`selection_score`), whether it is the ``chosen`` one, and ``failed`` for a rate whose
    training diverged (no numbers, never chosen). Methods in ``methods`` order, rates descending.
    """
    lines = []
    for m in methods:
        grid = [r for r in rows if r["method"] == m and r["seed"] == seed and r["fraction"] is None
                and r.get("phase") == "grid" and r["lr"] is not None]
        for r in sorted(grid, key=lambda r: -r["lr"]):
            val = r.get("val")
            lines.append({"method": m, "lr": r["lr"], "failed": r.get("failed"),
                          "retention": val.get("retention") if val else None,
                          "recall": val["recall"] if val else None,
                          "score": selection_score(val, rule) if val else None,
                          "chosen": r["lr"] == chosen.get(m) and val is not None})
    return lines


def grid_markdown(lines: Sequence[Row]) -> str:
    head = "| method | lr | val retention % | val recall % | score | chosen |\n|---|---|---|---|---|---|\n"

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    out = []
    for g in lines:
        if g["failed"]:
            out.append(f"| {g['method']} | {g['lr']:g} | failed: {g['failed']} | | | |")
            continue
        score = "–" if g["score"] is None else f"{g['score']:.3f}"
        out.append(f"| {g['method']} | {g['lr']:g} | {pct(g['retention'])} | {pct(g['recall'])} | {score} | "
                   f"{'✓' if g['chosen'] else ''} |")
    return head + "\n".join(out) + "\n"
