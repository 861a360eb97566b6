"""The protected subspaces of the compared methods, per target matrix of one SVF expert.

* ``probe``: the run's own probe (``probe.basis``, ``probe.score``, the selection rule);
* ``top``: per matrix the ``k`` principal components ``{0, …, k−1}`` of ``W`` (largest σ);
* ``random``: per matrix ``k`` components drawn uniformly without replacement (seeded);
* ``activation``: input side, the top eigenvectors of the skill's input covariance through the
  expert (:mod:`palora.activation_probe`), with the probe's selection rule.

``top`` and ``random`` take ``k`` per matrix from the probe's selection, so the three singular
sets protect exactly as many components: only *which* components differs. Their ``U_S``, ``V_S``
come from the SVD of the base weights, whose singular vectors the SVF expert shares.
"""

from __future__ import annotations

import torch
from torch import nn

from ..activation_probe import activation_subspaces
from ..config import RunConfig
from ..linalg import iter_svd
from ..probe import DATA_SCORES, select_subspace
from ..recipes.probe import selection_rule, skill_batches, skill_statistics
from ..skill_stats import input_covariance
from ..subspace import Subspace
from ..targets import Target, find_targets
from .registry import Protect


def probe_subspaces(cfg: RunConfig, base: nn.Module, svf_state: dict[str, torch.Tensor], parametrization: str,
                    expert: nn.Module, tokenizer, progress: bool = False) -> tuple[dict[str, Subspace], dict]:
    """What ``palora probe`` would save for this expert (the subspaces and the selection's statistics)."""
    if cfg.probe.basis == "activation":
        return covariance_subspaces(cfg, expert, tokenizer, progress)
    stats = skill_statistics(cfg, svf_state, parametrization, progress) if cfg.probe.score in DATA_SCORES else None
    targets = find_targets(base, cfg.model.target_modules)
    return select_subspace(targets, svf_state, parametrization, cfg.probe.score, selection_rule(cfg), progress, stats)


def covariance_subspaces(cfg: RunConfig, expert: nn.Module, tokenizer, progress: bool = False
                         ) -> tuple[dict[str, Subspace], dict]:
    """``act-protect`` (and ``probe.basis=activation``): the skill's input covariance through the expert."""
    targets = find_targets(expert, cfg.model.target_modules)
    cov = input_covariance(expert, skill_batches(cfg, tokenizer), [t.name for t in targets], progress)
    return activation_subspaces(cov, {t.name: t.shape[0] for t in targets}, selection_rule(cfg))


def same_budget_indices(counts: dict[str, int], ranks: dict[str, int], how: Protect, seed: int
                        ) -> dict[str, torch.Tensor]:
    """``k`` = ``counts[name]`` (capped at the rank) components per matrix: the top ones or random ones."""
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
