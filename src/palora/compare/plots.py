"""The comparison's plots: the trade-off (retention against recall), the learning-rate grid, the budget."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..report.plots import plt, save_figure  # matplotlib with the Agg backend (files only)
from .table import Row, seeds_label


def _color(i: int):
    """Distinct colours for up to 20 methods (matplotlib's cycle repeats after 10): tab20's dark
    shades for the first ten, its light ones after."""
    return plt.get_cmap("tab20")((2 * i) % 20 + (i // 10) % 2)


def _legend(ax, **kwargs) -> None:
    """``ax.legend(**kwargs)`` when something on ``ax`` is labelled: a plot can be empty (no
    retention where the expert scores 0), and matplotlib would draw an empty legend and warn."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def plot_grid(lines: Sequence[Row], path: Path, methods: Sequence[str]) -> None:
    """Validation retention against recall, one line per method through its rates; filled = chosen.

    Colours follow ``methods``' order, as in :func:`plot_tradeoff` with the same order."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for i, m in enumerate(methods):
        pts = [g for g in lines if g["method"] == m and g["retention"] is not None]
        if not pts:
            continue
        color = _color(i)
        ax.plot([g["recall"] for g in pts], [g["retention"] for g in pts], "-", color=color, alpha=0.6, label=m)
        for g in pts:
            ax.plot(g["recall"], g["retention"], "o", color=color, markersize=8 if g["chosen"] else 5,
                    markerfacecolor=color if g["chosen"] else "white")
            ax.annotate(f"{g['lr']:g}", (g["recall"], g["retention"]), textcoords="offset points", xytext=(4, 3),
                        fontsize=7, color=color)
    ax.set_xlabel("new-fact recall (validation)")
    ax.set_ylabel("skill retention (validation)")
    ax.set_title("learning-rate grid: each method's rates (filled: chosen)")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


def plot_tradeoff(table: Sequence[Row], path: Path) -> None:
    """Retention against new-fact recall, one point per method, error bars = std over seeds."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, t in enumerate(table):
        (x, xs, _), (y, ys, _) = t["recall"], t["retention"]
        if x is None or y is None:
            continue
        ax.errorbar(x, y, xerr=xs or 0, yerr=ys or 0, fmt="o", capsize=3, color=_color(i), label=t["method"])
    ax.set_xlabel("new-fact recall (test)")
    ax.set_ylabel("skill retention (accuracy / expert's, test)")
    ax.set_title("skill retention vs new-fact recall (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # not labels at points: they overlap
    save_figure(fig, path)


def plot_budget(curves: dict[str, list[Row]], path: Path, seeds: Sequence[int]) -> None:
    """Two panels: retention and recall against the share of components protected per matrix
    (error bars: std over ``seeds``, none for one seed)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, (m, points) in enumerate(curves.items()):
        if not points:
            continue
        for ax, key in zip(axes, ("retention", "recall")):
            shown = [p for p in points if p[key][0] is not None]  # retention: undefined where the expert scores 0
            ax.errorbar([p["fraction"] for p in shown], [p[key][0] for p in shown],
                        yerr=[p[key][1] or 0 for p in shown], marker="o", capsize=3, color=f"C{i}", label=m)
    axes[0].set_ylabel("skill retention (test)")
    axes[1].set_ylabel("new-fact recall (test)")
    for ax in axes:
        ax.set_xlabel("share of singular components protected per matrix")
        ax.grid(alpha=0.3)
    _legend(axes[1])  # recall is always defined; retention not where the expert scores 0
    fig.suptitle(f"protected budget: which components, and how many (test, {seeds_label(seeds)}; "
                 f"share 0 = LoRA at the same rate)")
    save_figure(fig, path)
