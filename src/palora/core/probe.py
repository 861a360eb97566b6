"""The skill probe: score every singular component of every target, pick the protected set.

Scores come from the frozen expert's effective scale ``s`` (see :mod:`palora.core.svf`):

* ``delta``:       ``a_i = |s_i − 1|``        (how far skill training moved component i);
* ``sigma_delta``: ``a_i = σ_i · |s_i − 1|``  (the same, in units of the weight's own energy);
* ``amplified``:   ``a_i = max(s_i − 1, 0)``  (only the components skill training strengthened);
* ``damped``:      ``a_i = max(1 − s_i, 0)``  (only those it weakened; a tie at 0 keeps spectral order);
* ``activation``: ``a_i = (σ_i s_i)² · E_skill[(v_iᵀ x)²]`` (the share of the expert's output
  energy on the skill's inputs that flows through component i);
* ``activation_delta``: ``activation · |s_i − 1|`` (energy the skill uses, on components it moved);
* ``fisher``: ``a_i = E[(∂L_skill/∂z_i)²]`` (sensitivity of the skill's loss to the component).

The last three need the skill data (:mod:`palora.core.statistics`).

Selection rules turn scores into a protected index set ``S`` per matrix (``r`` = its rank):

* ``topk``:      the ``k`` best components of each matrix;
* ``fraction``:  the ``⌈f·r⌉`` best of each matrix (``f = 0`` protects nothing, ``f = 1`` all);
* ``global``:    the ``⌈f·Σr⌉`` best over all matrices together (scores compared across matrices);
* ``threshold``: every component with ``a_i > τ``;
* ``energy``:    per matrix, the smallest prefix of the sorted scores with ``Σ_S a ≥ e·Σ a``.

:func:`spectrum_stats` reports where the selected components sit in the spectrum; the method's
premise is that a skill's components are spread over it, not packed at the top.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from .linalg import iter_svd
from .subspace import Subspace
from .svf import effective_scale
from .targets import Target

Score = Literal["delta", "sigma_delta", "amplified", "damped", "activation", "activation_delta", "fisher"]
#: scores that need statistics of the skill data (``stat`` below)
DATA_SCORES = {"activation": "activation", "activation_delta": "activation", "fisher": "fisher"}
Rule = Literal["fraction", "topk", "global", "threshold", "energy"]


def component_scores(
    scale: torch.Tensor, sigma: torch.Tensor, score: Score, stat: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-component scores (r,) float32 from the effective scale ``s``, ``σ`` and, for the data
    scores, ``stat`` (``E[(vᵀx)²]`` for the activation scores, ``E[(∂L/∂z)²]`` for ``fisher``)."""
    change = scale.float() - 1.0
    if score == "amplified":
        return change.clamp(min=0)
    if score == "damped":
        return (-change).clamp(min=0)
    delta = change.abs()
    if score == "delta":
        return delta
    if score == "sigma_delta":
        return sigma.float() * delta
    if score not in DATA_SCORES:
        raise ValueError(f"unknown probe score {score!r}")
    if stat is None:
        raise ValueError(f"probe score {score!r} needs statistics of the skill data")
    if score == "fisher":
        return stat.float()
    energy = (sigma.float() * scale.float()) ** 2 * stat.float()
    return energy if score == "activation" else energy * delta


@dataclass(frozen=True)
class SelectionRule:
    """A selection rule and its parameters; the field named by :data:`BUDGETS` is the rule's budget."""

    rule: Rule = "fraction"
    fraction: float = 0.25
    k: int = 64
    threshold: float = 0.05
    energy: float = 0.5

    def describe(self) -> str:
        return f"{self.rule}={getattr(self, BUDGETS[self.rule])}"

    def scaled(self, share: float) -> SelectionRule:
        """This rule with its budget scaled by ``share`` (a threshold has no budget and is refused)."""
        if self.rule == "threshold":
            raise ValueError(f"the {self.rule} rule has no budget to split among experts")
        field = BUDGETS[self.rule]
        value = getattr(self, field) * share
        return dataclasses.replace(self, **{field: int(round(value)) if field == "k" else value})


#: the parameter of each rule (``probe.<parameter>`` in the configuration)
BUDGETS: dict[str, str] = {"fraction": "fraction", "global": "fraction", "topk": "k", "threshold": "threshold",
                           "energy": "energy"}


def _top(scores: torch.Tensor, n: int) -> torch.Tensor:
    n = max(0, min(n, scores.numel()))
    # stable sort: ties keep spectral order, so the selection is deterministic
    return torch.sort(torch.argsort(scores, descending=True, stable=True)[:n]).values


def select(scores: dict[str, torch.Tensor], rule: SelectionRule) -> dict[str, torch.Tensor]:
    """Protected indices (ascending int64) per matrix."""
    if rule.rule == "global":
        names = list(scores)
        flat = torch.cat([scores[n].float() for n in names])
        n_total = math.ceil(rule.fraction * flat.numel())
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[torch.argsort(flat, descending=True, stable=True)[:n_total]] = True
        out, start = {}, 0
        for n in names:
            r = scores[n].numel()
            out[n] = torch.nonzero(keep[start:start + r]).flatten()
            start += r
        return out
    out = {}
    for name, a in scores.items():
        a = a.float()
        if rule.rule == "topk":
            idx = _top(a, rule.k)
        elif rule.rule == "fraction":
            idx = _top(a, math.ceil(rule.fraction * a.numel()))
        elif rule.rule == "threshold":
            idx = torch.nonzero(a > rule.threshold).flatten()
        elif rule.rule == "energy":
            order = torch.argsort(a, descending=True, stable=True)
            total = float(a.sum())
            if total <= 0 or rule.energy == 0:
                idx = order[:0]
            else:
                cum = torch.cumsum(a[order], 0)
                n = int(torch.searchsorted(cum, rule.energy * total * (1 - 1e-7)).item()) + 1
                idx = torch.sort(order[: min(n, a.numel())]).values
        else:
            raise ValueError(f"unknown selection rule {rule.rule!r}")
        out[name] = idx.to(torch.long)
    return out


def soft_weights(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``w_i = a_i / max_S a`` on the selected components, in [0, 1] (all ones if scores are 0)."""
    a = scores.float()[indices]
    top = a.max() if a.numel() else torch.tensor(0.0)
    return torch.ones_like(a) if float(top) <= 0 else (a / top).clamp(0, 1)


def spectrum_stats(indices: dict[str, torch.Tensor], ranks: dict[str, int], bins: int = 10) -> dict:
    """Where the protected components sit: per matrix and overall.

    ``position`` = index / r (0 = largest singular value). ``in_top_block`` is the share of the
    selected components that the "protect the top-k" rule with the same k would also pick.
    """
    per_matrix = {}
    hist = torch.zeros(bins)
    selected = total = 0
    overlap = 0
    for name, idx in indices.items():
        r = ranks[name]
        k = int(idx.numel())
        pos = idx.float() / r
        in_top = int((idx < k).sum())
        per_matrix[name] = {
            "k": k,
            "rank": r,
            "mean_position": float(pos.mean()) if k else None,
            "in_top_block": in_top / k if k else None,
        }
        if k:
            hist += torch.histc(pos, bins=bins, min=0.0, max=1.0)
        selected += k
        total += r
        overlap += in_top
    return {
        "selected": selected,
        "total": total,
        "fraction": selected / total if total else 0.0,
        "in_top_block": overlap / selected if selected else None,
        "position_histogram": [int(h) for h in hist.tolist()],
        "per_matrix": per_matrix,
    }


def select_subspace(
    targets: list[Target],
    state: dict[str, torch.Tensor],
    parametrization: str,
    score: Score = "delta",
    rule: SelectionRule | None = None,
    progress: bool = True,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, Subspace], dict]:
    """The protected subspace of every target from a trained SVF state (``<name>.z``, ``<name>.sigma``).

    Scores need only ``σ`` and ``s``, so the global rule sees every matrix before the SVDs are
    redone, one matrix at a time, to slice ``U_S`` and ``V_S``. ``stats`` are the skill statistics
    the data scores need (:mod:`palora.core.statistics`). Returns the subspaces (soft
    weights always filled in) and :func:`spectrum_stats` of the selection.
    """
    rule = rule or SelectionRule()
    scores, ranks = {}, {}
    for t in targets:
        if f"{t.name}.z" not in state:
            raise KeyError(f"the SVF state has no scale for {t.name}")
        sigma = state[f"{t.name}.sigma"]
        scale = effective_scale(state[f"{t.name}.z"], sigma, parametrization)
        scores[t.name] = component_scores(scale, sigma, score, None if stats is None else stats[t.name])
        ranks[t.name] = sigma.numel()
    indices = select(scores, rule)
    subspaces = {}
    for t, svd in tqdm(iter_svd(targets), total=len(targets), desc="probe", disable=not progress, unit="matrix"):
        # the expert's σ came from these very weights; another decomposition would misalign indices
        if not torch.allclose(svd.S, state[f"{t.name}.sigma"], rtol=1e-4, atol=1e-6):
            raise ValueError(f"the singular values of {t.name} differ from those of the SVF state")
        subspaces[t.name] = Subspace.from_svd(svd, indices[t.name], soft_weights(scores[t.name], indices[t.name]))
    stats = spectrum_stats(indices, ranks)
    stats.update(rule=rule.describe(), score=score)
    return subspaces, stats


def same_budget_indices(counts: dict[str, int], ranks: dict[str, int], how: Literal["top", "random"], seed: int
                        ) -> dict[str, torch.Tensor]:
    """The probe's ablations: per matrix ``k = counts[name]`` (capped at the rank) components, the
    principal ones ``{0, …, k−1}`` (``top``) or ``k`` drawn uniformly without replacement (``random``,
    seeded), so that they protect exactly as many components as the probe: only *which* differs."""
    out = {}
    g = torch.Generator().manual_seed(seed)
    for name, r in ranks.items():
        k = min(counts[name], r)
        if how == "top":
            out[name] = torch.arange(k)
        elif how == "random":
            out[name] = torch.sort(torch.randperm(r, generator=g)[:k]).values
        else:
            raise ValueError(f"no same-budget rule for {how!r}")
    return out


def singular_subspaces(targets: list[Target], indices: dict[str, torch.Tensor]) -> dict[str, Subspace]:
    """``U_S``, ``V_S`` of ``indices`` from the SVD of each target (one matrix at a time)."""
    return {t.name: Subspace.from_svd(svd, indices[t.name], torch.ones(indices[t.name].numel()))
            for t, svd in iter_svd(targets)}
