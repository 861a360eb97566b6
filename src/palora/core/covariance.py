"""The activation basis: protect the directions the skill's inputs use, not singular components.

For a target ``W`` (m x n) and the skill's inputs ``x`` (through the SVF expert), the input
covariance ``C = E[x xᵀ] = Q diag(λ) Qᵀ`` (n x n, ``λ`` descending) has eigenvectors ``q_j``. The
selection rules of :mod:`palora.core.probe` pick ``S`` from the scores ``a_j = λ_j``; the protected
subspace is input-side only: ``V_S = Q[:, S]`` (n x k) and ``U_S`` empty (m x 0), so the update
``ΔW = B A P_in`` with ``P_in = I − V_S V_Sᵀ`` satisfies ``ΔW x = ΔW P_in x``: the skill's inputs,
which lie mostly in ``span(V_S)``, barely move the output.

Why it exists: measured on SmolLM2 (docs/results.md), half of the singular components hold under
two thirds of the skill's input energy in gate/up, and a wide ``down_proj`` (n > r) receives most
of it in ``W``'s null space, which no singular component covers. The covariance basis covers it.
"""

from __future__ import annotations

import torch

from .probe import SelectionRule, select
from .subspace import Subspace


def activation_subspaces(
    covariances: dict[str, torch.Tensor], out_features: dict[str, int], rule: SelectionRule
) -> tuple[dict[str, Subspace], dict]:
    """Input-side subspaces from the skill's input covariance of every target.

    ``indices`` are positions in the eigenvalue order (0 = largest); ``weights`` (soft projector)
    are ``λ_j / λ_max`` over the selected directions. Returns the subspaces and statistics: the
    share of the skill's input energy ``Σ_S λ / Σ λ`` each selection holds.
    """
    eig = {}
    for name, C in covariances.items():
        # float32: half the time of float64 (bench/demo_speed.py: 7.6 s against 15.7 s for the demo),
        # and the eigenvectors are orthonormal to ~1e-6, which is all the projection needs
        lam, Q = torch.linalg.eigh(C.float())  # ascending
        eig[name] = (lam.flip(0).clamp_min(0), Q.flip(1))  # (n,), (n, n) descending
    chosen = select({n: lam for n, (lam, _) in eig.items()}, rule)
    subspaces, shares = {}, {}
    for name, (lam, Q) in eig.items():
        idx = chosen[name]
        top = lam[idx].max() if idx.numel() else torch.tensor(0.0)
        w = lam[idx] / top if float(top) > 0 else torch.ones(idx.numel())
        subspaces[name] = Subspace(idx, torch.zeros(out_features[name], 0), Q[:, idx].contiguous(), w)
        shares[name] = float(lam[idx].sum() / lam.sum().clamp_min(1e-30))
    total = sum(lam.numel() for lam, _ in eig.values())
    selected = sum(s.k for s in subspaces.values())
    stats = {
        "basis": "activation",
        "selected": selected,
        "total": total,
        "fraction": selected / total if total else 0.0,
        "in_top_block": None,
        "energy_share_mean": sum(shares.values()) / max(len(shares), 1),
        "energy_share": shares,
    }
    return subspaces, stats
