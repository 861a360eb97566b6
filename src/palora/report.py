"""The run's report: ``report.json`` (the contract), ``report.md`` (the table) and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from . import __version__  # noqa: E402
from .artifacts import RunDir, atomic_path, write_json  # noqa: E402
from .config import RunConfig, to_dict  # noqa: E402
from .svf import effective_scale  # noqa: E402


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The metrics table; the old-fact column appears when the run measured old facts."""
    known = any("known_recall" in r for r in rows)
    head = "| model | skill accuracy % | retention % | new-fact recall % |"
    rule = "|---|---|---|---|"
    if known:
        head += " old-fact recall % | old-fact retention % |"
        rule += "---|---|"
    head += " trainable params | train time s |\n"
    rule += "---|---|\n"
    lines = []
    for r in rows:
        t = r.get("train_time_s")
        line = (f"| {r['name']} | {_pct(r['skill_accuracy'])} ± {_pct(r['skill_stderr'])} | {_pct(r['retention'])} "
                f"| {_pct(r['knowledge_recall'])} ± {_pct(r['knowledge_stderr'])} |")
        if known:
            line += f" {_pct(r.get('known_recall'))} ± {_pct(r.get('known_stderr'))} | {_pct(r.get('known_retention'))} |"
        line += f" {r['trainable_parameters']:,} | {'' if t is None else f'{t:.1f}'} |"
        lines.append(line)
    return head + rule + "\n".join(lines) + "\n"


def table_legend(rows: list[dict[str, Any]], seed: int) -> str:
    """The sentence above :func:`markdown_table`: sizes of the sets, and what the columns mean."""
    n_skill = rows[0]["n_skill"] if rows else 0
    n_facts = rows[0]["n_knowledge"] if rows else 0
    return (f"Skill items: {n_skill}, fact questions: {n_facts}, seed {seed}. "
            "± is the binomial standard error; retention = skill accuracy / the expert's; "
            "old-fact retention = old-fact recall / the base model's.\n")


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


def write_report(rd: RunDir, rows: list[dict[str, Any]], stages: dict[str, Any], cfg: RunConfig,
                 lm_eval: dict[str, dict[str, dict[str, float]]] | None = None) -> dict[str, Any]:
    """``lm_eval``: ``{model: {task: {metric: value}}}`` of lm-evaluation-harness, when the run asked for it."""
    report = {"rows": rows, "stages": stages, "palora_version": __version__, "config": to_dict(cfg)}
    if lm_eval is not None:
        report["lm_eval"] = lm_eval
    write_json(rd.report_json, report)
    md = [f"# palora report: {cfg.model.name}\n", table_legend(rows, cfg.seed), markdown_table(rows)]
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


# ----------------------------------------------------------------------------- plots


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_retention_vs_recall(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        if r.get("retention") is None:
            continue
        ax.errorbar(r["knowledge_recall"], r["retention"], xerr=r["knowledge_stderr"], fmt="o", capsize=3)
        ax.annotate(r["name"], (r["knowledge_recall"], r["retention"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("new-fact recall")
    ax.set_ylabel("skill retention (accuracy / expert's)")
    ax.set_title("skill retention vs new-fact recall")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_scales(svf_path: Path, path: Path) -> None:
    """Heat maps of ``s − 1`` (layer x singular index), one panel per kind of matrix."""
    with safe_open(str(svf_path), framework="pt") as f:
        meta = f.metadata() or {}
        names = [k[: -len(".z")] for k in f.keys() if k.endswith(".z")]
        panels: dict[str, list[torch.Tensor]] = {}
        for name in names:
            s = effective_scale(f.get_tensor(f"{name}.z"), f.get_tensor(f"{name}.sigma"), meta["parametrization"])
            panels.setdefault(name.rpartition(".")[2], []).append(s - 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), squeeze=False)
    vmax = max(float(torch.cat(v).abs().max()) for v in panels.values()) or 1.0
    for ax, (kind, rows) in zip(axes[0], panels.items()):
        r = max(x.numel() for x in rows)
        grid = torch.full((len(rows), r), float("nan"))
        for i, x in enumerate(rows):
            grid[i, : x.numel()] = x
        im = ax.imshow(grid.numpy(), aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(kind)
        ax.set_xlabel("singular index (0 = largest σ)")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="s − 1")
    fig.suptitle("learned SVF scales: the skill's fingerprint on the spectrum")
    save_figure(fig, path)


def plot_protected_spectrum(stats: dict[str, Any], path: Path) -> None:
    """Where the protected components sit, against a top-k block of the same size."""
    hist = stats["position_histogram"]
    bins = len(hist)
    fraction = stats["fraction"]
    top = [min(max(fraction * bins - i, 0.0), 1.0) * stats["total"] / bins for i in range(bins)]
    xs = [(i + 0.5) / bins for i in range(bins)]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.bar(xs, hist, width=1 / bins, alpha=0.7, label=f"probe ({stats['rule']}, {stats['score']})", edgecolor="k")
    ax.step([0] + [(i + 1) / bins for i in range(bins)], [top[0]] + top, where="pre", color="C3",
            label="top-k block, same k")
    ax.set_xlabel("position in the spectrum (index / rank)")
    ax.set_ylabel("protected components")
    ax.set_title(f"protected components: {100 * fraction:.1f}% of all")
    ax.legend()
    save_figure(fig, path)


def plot_protected_energy(stats: dict[str, Any], path: Path) -> None:
    """Activation basis: the share of the skill's input energy the protected directions hold,
    per layer and kind of matrix (targets in module order)."""
    panels: dict[str, list[float]] = {}
    for name, share in stats["energy_share"].items():
        panels.setdefault(name.rpartition(".")[2], []).append(share)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kind, shares in panels.items():
        ax.plot(range(len(shares)), shares, marker="o", ms=3, label=kind)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of the skill's input energy")
    ax.set_title(f"protected directions ({100 * stats['fraction']:.0f}% of the input dims): energy held")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def write_plots(rd: RunDir, rows: list[dict[str, Any]]) -> None:
    rd.plots.mkdir(parents=True, exist_ok=True)
    plot_retention_vs_recall(rows, rd.plots / "retention_vs_recall.png")
    if rd.svf_expert.is_file():
        plot_scales(rd.svf_expert, rd.plots / "svf_scales.png")
    stats = json.loads(rd.probe_stats.read_text(encoding="utf-8")) if rd.probe_stats.is_file() else {}
    if "position_histogram" in stats:  # singular basis: positions in W's spectrum
        plot_protected_spectrum(stats, rd.plots / "protected_spectrum.png")
    elif "energy_share" in stats:  # activation basis: the skill's input energy held
        plot_protected_energy(stats, rd.plots / "protected_energy.png")
