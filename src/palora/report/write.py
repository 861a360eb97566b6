"""The run's report: ``report.json`` (the contract), ``report.md`` (the table) and the plots."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..config import RunConfig, to_dict
from ..io.artifacts import RunDir, atomic_path, write_json
from .plots import write_plots
from .tables import certificates, lm_eval_table, markdown_table, mistakes_table, stage_times, table_legend


def write_report(rd: RunDir, rows: list[dict[str, Any]], stages: dict[str, Any], cfg: RunConfig,
                 lm_eval: dict[str, dict[str, dict[str, float]]] | None = None) -> dict[str, Any]:
    """``lm_eval``: ``{model: {task: {metric: value}}}`` of lm-evaluation-harness, when the run asked for it."""
    report = {"rows": rows, "stages": stages, "palora_version": __version__, "config": to_dict(cfg)}
    if lm_eval is not None:
        report["lm_eval"] = lm_eval
    write_json(rd.report_json, report)
    md = [f"# palora report: {cfg.model.name}\n", table_legend(rows, cfg.seed), markdown_table(rows)]
    md.append(mistakes_table([(r["name"], r.get("skill_mistakes"), r["n_skill"]) for r in rows]))
    md += certificates(stages)
    if lm_eval is not None:
        version = stages.get("eval", {}).get("lm_eval_version", "")
        md.append(f"\nlm-evaluation-harness {version} (lm-eval's metric names; ± is lm-eval's standard error):\n\n"
                  + lm_eval_table(lm_eval))
    md.append("\n" + stage_times(rd) + "\n")
    with atomic_path(rd.report_md) as tmp:
        tmp.write_text("".join(md), encoding="utf-8")
    write_plots(rd, rows)
    return report
