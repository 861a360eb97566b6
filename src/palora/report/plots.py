"""The run's figures (PNG, written atomically): retention against recall, the SVF scales, where
the protected components sit in the spectrum, or the skill's input energy they hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from safetensors import safe_open  # noqa: E402

from ..core.svf import effective_scale  # noqa: E402
from ..io.artifacts import RunDir, atomic_path  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_retention_vs_recall(rows: list[dict[str, Any]], path: Path) -> None:
    """One point per model: skill retention against new-fact recall and, when the run measured
    old facts, a second panel with their retention (the three axes); where the expert scores 0,
    skill retention is undefined, and the plot says so."""
    known = any(r.get("known_of_expert") is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if known else 1, figsize=(10 if known else 5, 4), squeeze=False)
    panels = [("retention", "skill retention (accuracy / expert's)", "skill retention vs new-fact recall")]
    if known:
        panels.append(("known_of_expert", "old knowledge (old-fact recall / expert's)", "old facts vs new-fact recall"))
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        shown = [r for r in rows if r.get(key) is not None]
        for r in shown:
            ax.errorbar(r["knowledge_recall"], r[key], xerr=r["knowledge_stderr"], fmt="o", capsize=3)
            ax.annotate(r["name"], (r["knowledge_recall"], r[key]), textcoords="offset points", xytext=(5, 5))
        if not shown:
            ax.text(0.5, 0.5, "retention is undefined:\nthe expert answers no skill question right",
                    ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("new-fact recall")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
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
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False, layout="constrained")
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
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
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
    """Activation basis: the share of the skill's input energy the protected directions hold, per
    layer and kind of matrix (targets in module order). A union of several selections (kept data,
    several skills) draws one line per selection, its own directions' share of its own data's
    energy averaged over the kinds of matrix: the united set holds at least that much."""
    def by_layer(shares: dict[str, float]) -> dict[str, list[float]]:
        panels: dict[str, list[float]] = {}
        for name, share in shares.items():
            panels.setdefault(name.rpartition(".")[2], []).append(share)
        return panels

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if "energy_share" in stats:
        lines = by_layer(stats["energy_share"])
        title = f"protected directions ({100 * stats['fraction']:.0f}% of the input dims): energy held"
    else:
        lines = {}
        for part in stats["experts"]:
            kinds = list(by_layer(part["energy_share"]).values())
            lines[Path(part.get("data") or part["run"]).stem] = [sum(x) / len(x) for x in zip(*kinds)]
        title = f"protected directions ({100 * stats['fraction']:.0f}% of the input dims): each part's energy"
    for label, shares in lines.items():
        ax.plot(range(len(shares)), shares, marker="o", ms=3, label=label)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of the input energy held")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def write_plots(rd: RunDir, rows: list[dict[str, Any]]) -> None:
    rd.plots.mkdir(parents=True, exist_ok=True)
    plot_retention_vs_recall(rows, rd.plots / "retention_vs_recall.png")
    if rd.svf_expert.is_file():
        plot_scales(rd.svf_expert, rd.plots / "svf_scales.png")
    singular, activation = rd.probe_stats_file("singular"), rd.probe_stats_file("activation")
    if singular.is_file():  # positions in W's spectrum
        plot_protected_spectrum(json.loads(singular.read_text(encoding="utf-8")), rd.plots / "protected_spectrum.png")
    if activation.is_file():  # the skill's input energy the protected directions hold
        stats = json.loads(activation.read_text(encoding="utf-8"))
        if "energy_share" in stats or all("energy_share" in p for p in stats.get("experts", [{}])):
            plot_protected_energy(stats, rd.plots / "protected_energy.png")
