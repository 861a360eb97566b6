"""The run's tables in markdown: the metrics table, lm-eval's scores, the certificates, stage times."""

from __future__ import annotations

import json
from typing import Any

from ..core.mistakes import KINDS
from ..io.artifacts import RunDir


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The metrics table; the old-fact column appears when the run measured old facts."""
    known = any("known_recall" in r for r in rows)
    head = "| model | skill accuracy % | retention % | new-fact recall % |"
    rule = "|---|---|---|---|"
    if known:
        head += " old-fact recall % | old knowledge % of the expert's |"
        rule += "---|---|"
    head += " trainable params | train time s |\n"
    rule += "---|---|\n"
    lines = []
    for r in rows:
        t = r.get("train_time_s")
        line = (f"| {r['name']} | {_pct(r['skill_accuracy'])} ± {_pct(r['skill_stderr'])} | {_pct(r['retention'])} "
                f"| {_pct(r['knowledge_recall'])} ± {_pct(r['knowledge_stderr'])} |")
        if known:
            line += f" {_pct(r.get('known_recall'))} ± {_pct(r.get('known_stderr'))} | {_pct(r.get('known_of_expert'))} |"
        line += f" {r['trainable_parameters']:,} | {'' if t is None else f'{t:.1f}'} |"
        lines.append(line)
    return head + rule + "\n".join(lines) + "\n"


def table_legend(rows: list[dict[str, Any]], seed: int) -> str:
    """The sentence above :func:`markdown_table`: sizes of the sets, and what the columns mean."""
    n_skill = rows[0]["n_skill"] if rows else 0
    n_facts = rows[0]["n_knowledge"] if rows else 0
    return (f"Skill items: {n_skill}, fact questions: {n_facts}, seed {seed}. "
            "± is the binomial standard error; retention = skill accuracy / the expert's; "
            "old knowledge = old-fact recall / the expert's.\n")


def mistakes_table(named: list[tuple[str, dict[str, int] | None, int]]) -> str:
    """Wrong skill answers by kind (:mod:`palora.core.mistakes`), one row per ``(model, counts, n)``:
    each kind's share of the ``n`` questions, in %; "" when no model has counts (not a numeric skill)."""
    rows = [(name, counts, n) for name, counts, n in named if counts is not None and n]
    if not rows:
        return ""
    head = ("\nWrong skill answers by kind, % of the questions (near: within max(1, 10 %) of the answer; fact: a "
            "number of the facts' answers or its first digits, such as 19 of 1987; other: another number; words: "
            "no number):\n\n"
            "| model | " + " | ".join(KINDS) + " | all wrong |\n|---|" + "---|" * (len(KINDS) + 1) + "\n")
    lines = [f"| {name} | " + " | ".join(f"{100 * counts[k] / n:.1f}" for k in KINDS)
             + f" | {100 * sum(counts.values()) / n:.1f} |" for name, counts, n in rows]
    return head + "\n".join(lines) + "\n"


def lm_eval_table(scores: dict[str, dict[str, dict[str, float]]]) -> str:
    """lm-evaluation-harness scores: one row per model, one column per task and metric (± its stderr)."""
    columns = sorted({(task, metric) for tasks in scores.values() for task, metrics in tasks.items()
                      for metric in metrics if "_stderr," not in metric})
    head = "| model | " + " | ".join(f"{task} {metric}" for task, metric in columns) + " |\n"
    rule = "|---|" + "---|" * len(columns) + "\n"
    lines = []
    for name, tasks in scores.items():
        cells = []
        for task, metric in columns:
            value = tasks.get(task, {}).get(metric)
            stderr = tasks.get(task, {}).get(metric.replace(",", "_stderr,", 1))
            cells.append("n/a" if value is None else f"{value:.3f}" + ("" if stderr is None else f" ± {stderr:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + rule + "\n".join(lines) + "\n"


def certificates(stages: dict[str, Any]) -> list[str]:
    """One paragraph per orthogonal method: max over matrices of ‖U_Sᵀ ΔW‖/‖ΔW‖ and ‖ΔW V_S‖/‖ΔW‖."""
    return [f"\nOrthogonality certificate of `{key.split(':', 1)[1]}` (max over matrices): "
            f"‖U_Sᵀ ΔW‖/‖ΔW‖ = {v['certificate_out']:.2e}, ‖ΔW V_S‖/‖ΔW‖ = {v['certificate_in']:.2e}\n"
            for key, v in stages.items() if key.startswith("inject:") and "certificate_out" in v]


def stage_times(rd: RunDir) -> str:
    """``Wall time per stage (s): svf 118.9, probe 9.3, ...`` from ``stages.json``."""
    stages = json.loads(rd.stages.read_text(encoding="utf-8")) if rd.stages.is_file() else {}
    times = [f"{k} {v['wall_time_s']:.1f}" for k, v in stages.items() if isinstance(v, dict) and "wall_time_s" in v]
    return "Wall time per stage (s): " + (", ".join(times) if times else "n/a")
