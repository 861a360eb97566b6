"""One row of the verdict table per setting: each method's retention and recall over seeds.

    python experiments/verdict.py --setting "E3=runs/e3/seed0,runs/e3/seed1,runs/e3/seed2" \
        [--setting NAME=DIRS ...] [--json verdict.json]

Each run directory holds the ``report.json`` of ``palora run`` (test splits): base, expert and
every injected method of one seed. Per method and setting, over the seeds (mean ± standard error
of the mean, ``std / √n``; one seed: ± the binomial standard error of its test number):

* retention = skill after / the expert's (of the same seed);
* gain retention = (after − base) / (expert − base), the share of the expert's gain kept (the
  paper's regime, where the base already has part of the skill);
* recall = new facts recalled (unseen question templates, greedy generation);
* capitals = known capitals still answered / the expert's.

The cell's verdict is on the paper's claim, ≥ 95 % retention at competitive recall: "holds" when
the mean retention is ≥ 95 % and the mean recall at least 80 % of plain LoRA's at the same rate
and steps; otherwise the axis that fails ("retention", or "recall"). The paired recall
difference to LoRA is printed with its standard error beside it. At one rate per method the
comparison is at the same budget, not at matched recall.

Matched recall (``--line NAME=DIR,...``, each ``DIR`` with ``{seed}`` where the seed goes: runs of
plain LoRA at other rates on the same experts, e.g. ``runs/gemma/seed{seed}-lora1e-3``): per seed,
LoRA's points ``(recall, retention)`` (the setting's own ``lora`` and the line's) are cut to their
Pareto front (a point with both less recall and less retention than another is dropped: the
best LoRA a user could pick), and the front is interpolated linearly at the method's recall. The
gap ``retention − LoRA's retention at that recall`` is averaged over the seeds whose recall lies
within the front's range ("bracketed"); a seed outside it has no LoRA point to compare with.

``--plot PATH`` draws it: one panel per LoRA front (settings whose lines give the same fronts
share a panel, e.g. a method at another rate on the same experts), the front of every seed, and
each method's seeds with their mean ± standard error in both axes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def mean_se(xs: list[float], one_seed_se: float) -> tuple[float, float]:
    """Mean and its standard error over ``xs``; one value: ``one_seed_se`` (its binomial one)."""
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return m, one_seed_se
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def seed_rows(run: Path) -> dict[str, dict]:
    report = json.loads((run / "report.json").read_text())
    return {row["name"]: row for row in report["rows"]}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def seed_metrics(rows: dict[str, dict], m: str) -> dict[str, tuple[float, float]]:
    """One seed's metrics of method ``m``, each with its binomial standard error."""
    base, expert, row = rows["base"], rows["expert"], rows[m]
    acc, se = row["skill_accuracy"], row["skill_stderr"]
    gain = expert["skill_accuracy"] - base["skill_accuracy"]
    out = {"skill": (acc, se), "retention": (_ratio(acc, expert["skill_accuracy"]), _ratio(se, expert["skill_accuracy"])),
           "gain": (_ratio(acc - base["skill_accuracy"], gain), _ratio(se, gain)),
           "recall": (row["knowledge_recall"], row["knowledge_stderr"])}
    if row.get("known_recall") is not None and expert.get("known_recall"):
        out["capitals"] = (row["known_recall"] / expert["known_recall"], row["known_stderr"] / expert["known_recall"])
    if "lora" in rows and m not in ("base", "expert", "lora"):
        lora = rows["lora"]
        out["recall_gap"] = (row["knowledge_recall"] - lora["knowledge_recall"],
                             math.hypot(row["knowledge_stderr"], lora["knowledge_stderr"]))
    return out


def lora_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto front of LoRA's ``(recall, retention)`` points, by increasing recall (and so
    decreasing retention): the points no other point beats on both axes."""
    front = [p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)]
    return sorted(set(front))


def at_recall(front: list[tuple[float, float]], recall: float) -> float | None:
    """LoRA's retention at ``recall``, linear between the front's neighbours; ``None`` outside it."""
    if not front or not front[0][0] <= recall <= front[-1][0]:
        return None
    for (r0, k0), (r1, k1) in zip(front, front[1:]):
        if r0 <= recall <= r1:
            return k0 if r1 == r0 else k0 + (recall - r0) / (r1 - r0) * (k1 - k0)
    return front[0][1]  # a front of one point, at exactly its recall


def line_points(rows: dict[str, dict], line: list[str]) -> list[tuple[float, float]]:
    """One seed's LoRA points: its own ``lora`` row and that of every run of ``line`` (the same
    seed, the same expert: checked on the expert's skill score)."""
    points = [_point(rows, "lora")] if "lora" in rows else []
    seed = rows["expert"]["seed"]
    for pattern in line:
        other = seed_rows(Path(pattern.format(seed=seed)))
        if other["expert"]["skill_accuracy"] != rows["expert"]["skill_accuracy"]:
            raise SystemExit(f"{pattern.format(seed=seed)}: another expert than seed {seed}'s run")
        points.append(_point(other, "lora"))
    return points


def _point(rows: dict[str, dict], m: str) -> tuple[float, float]:
    """Method ``m``'s ``(recall, retention)`` in one seed's rows."""
    return rows[m]["knowledge_recall"], _ratio(rows[m]["skill_accuracy"], rows["expert"]["skill_accuracy"])


def setting_table(runs: list[Path], line: list[str] | None = None) -> dict[str, dict]:
    """``{method: {metric: (mean, se)}}`` over the runs (seeds) of one setting; with ``line``, also
    ``matched_gap`` (retention − LoRA's at the same recall, over the bracketed seeds) and
    ``bracketed`` (how many)."""
    per_seed = [seed_rows(r) for r in runs]
    fronts = [lora_front(line_points(rows, line)) for rows in per_seed] if line else None
    methods = [m for m in per_seed[0] if all(m in rows for rows in per_seed)]
    out: dict[str, dict] = {}
    for m in methods:
        seeds = [seed_metrics(rows, m) for rows in per_seed]
        stats: dict = {"seeds": len(seeds)}
        for key in [k for k in seeds[0] if all(k in s for s in seeds)]:  # recall_gap: seeds with a lora row
            stats[key] = mean_se([s[key][0] for s in seeds], seeds[0][key][1])
        if "recall_gap" in stats:  # the ratio of the mean recalls
            recall = sum(rows["lora"]["knowledge_recall"] for rows in per_seed) / len(per_seed)
            stats["recall_ratio"] = (_ratio(stats["recall"][0], recall), math.nan)
        if fronts is not None and m not in ("base", "expert", "lora"):
            gaps, se = [], math.nan
            for rows, front in zip(per_seed, fronts):
                recall, retention = _point(rows, m)
                lora = at_recall(front, recall)
                if lora is not None:
                    gaps.append(retention - lora)
                    se = _ratio(rows[m]["skill_stderr"], rows["expert"]["skill_accuracy"])  # one seed: the method's
            stats["bracketed"] = len(gaps)
            if gaps:
                stats["matched_gap"] = mean_se(gaps, se)
        out[m] = stats
    return out


def plot_lines(settings: dict[str, list[Path]], lines: dict[str, list[str]], path: Path) -> list[list[str]]:
    """Skill retention against new-fact recall, one panel per set of LoRA fronts (the settings of
    ``settings`` whose ``lines`` give the same per-seed fronts): the fronts as thin lines, each
    method's seeds as small markers and their mean ± standard error as a large one. Returns the
    settings of each panel."""
    from palora.report.plots import plt, save_figure  # matplotlib with the Agg backend (files only)

    panels: dict[tuple, list[str]] = {}
    for name, runs in settings.items():
        if name in lines:
            fronts = tuple(tuple(lora_front(line_points(seed_rows(r), lines[name]))) for r in runs)
            panels.setdefault(fronts, []).append(name)
    if not panels:
        raise SystemExit("--plot draws the settings given a --line: give at least one")
    fig, axes = plt.subplots(1, len(panels), figsize=(9.5 * len(panels), 5), squeeze=False)
    for ax, (fronts, names) in zip(axes[0], panels.items()):
        off_labelled = False
        for i, (front, run) in enumerate(zip(fronts, settings[names[0]])):
            ax.plot([100 * x for x, _ in front], [100 * y for _, y in front], "-s", color="0.55",
                    lw=1, ms=4, label="plain LoRA's front (per seed)" if i == 0 else None)
            off = [p for p in line_points(seed_rows(run), lines[names[0]]) if p not in front]
            ax.plot([100 * x for x, _ in off], [100 * y for _, y in off], "s", mfc="none", color="0.55", ms=5,
                    label=None if off_labelled or not off else "plain LoRA, a rate off the front")
            off_labelled |= bool(off)
        colour = 0
        for k, name in enumerate(names):
            per_seed = [seed_rows(r) for r in settings[name]]
            table = setting_table(settings[name])
            for m, stats in table.items():
                if m in ("base", "expert", "lora"):
                    continue
                c = plt.get_cmap("tab10")(colour % 10)
                colour += 1
                pts = [_point(rows, m) for rows in per_seed]
                ax.plot([100 * x for x, _ in pts], [100 * y for _, y in pts], "o", color=c, ms=4, alpha=0.5)
                (rc, rc_se), (rt, rt_se) = stats["recall"], stats["retention"]
                label = m if k == 0 else f"{m} ({name})"
                ax.errorbar(100 * rc, 100 * rt, xerr=100 * rc_se, yerr=100 * rt_se, fmt="D", color=c, ms=8,
                            capsize=3, label=f"{label}, mean ± SE of {stats['seeds']}")
        ax.axhline(95, color="0.3", ls=":", lw=1)
        ax.set_xlabel("new-fact recall % (unseen templates, greedy)")
        ax.set_ylabel("skill retention % of the expert")
        ax.set_title(names[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(fig, path)
    return list(panels.values())


def verdict(stats: dict) -> str:
    """``holds``, or the axis that fails: ``retention`` (< 95 %), ``recall`` (< 80 % of LoRA's)."""
    if stats["retention"][0] < 0.95:
        return "retention"
    if stats["recall_ratio"][0] < 0.8:
        return "recall"
    return "holds"


def pct(v: tuple[float, float]) -> str:
    return f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", action="append", required=True, metavar="NAME=DIR,DIR,...")
    ap.add_argument("--line", action="append", default=[], metavar="NAME=DIR,DIR,...",
                    help="plain LoRA at other rates for setting NAME, '{seed}' in each DIR (matched recall)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--plot", type=Path, help="retention against recall with LoRA's front, one panel per set of LoRA fronts (PNG)")
    args = ap.parse_args()
    lines = {name: spec.split(",") for name, _, spec in (s.partition("=") for s in args.line)}
    settings = {name: [Path(d) for d in dirs.split(",")] for name, _, dirs in (s.partition("=") for s in args.setting)}
    if unknown := [name for name in lines if name not in settings]:
        raise SystemExit(f"--line for no --setting: {', '.join(unknown)}")
    tables = {name: setting_table(runs, lines.get(name)) for name, runs in settings.items()}
    print("| setting | method | seeds | skill % | retention % | gain retention % | recall % | recall − LoRA's | "
          "retention − LoRA's at the same recall | capitals kept % | paper's claim |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, table in tables.items():
        for m, s in table.items():
            if m == "base":
                continue
            gap = pct(s["recall_gap"]) if "recall_gap" in s else "–"
            claim = verdict(s) if "recall_gap" in s else "–"
            matched = "–" if "bracketed" not in s else "not bracketed" if not s["bracketed"] else \
                f"{pct(s['matched_gap'])} ({s['bracketed']} of {s['seeds']} seeds)"
            print(f"| {name} | {m} | {s['seeds']} | {pct(s['skill'])} | {pct(s['retention'])} | {pct(s['gain'])} | "
                  f"{pct(s['recall'])} | {gap} | {matched} | {pct(s['capitals']) if 'capitals' in s else '–'} | {claim} |")
    if args.json:
        args.json.write_text(json.dumps(tables, indent=1))
    if args.plot:
        plot_lines(settings, lines, args.plot)


if __name__ == "__main__":
    main()
