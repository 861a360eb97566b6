"""One protected subspace from several: the experts of several skills, or a skill and an earlier update.

**Union of spans.** For orthonormal bases ``Q_1 … Q_E`` (d x k_e) of subspaces of ``R^d``, the
union ``span(Q_1) + … + span(Q_E)`` has the orthonormal basis ``Q`` of the left singular
vectors of ``M = [Q_1 … Q_E]`` (d x Σk) whose singular values exceed ``ρ · σ_max(M)``
(:func:`orthonormal_span`, float64). Directions shared by several blocks appear once: exactly
dependent columns give singular values at rounding level (~1e-7 for float32 inputs), far below
``ρ = 1e-5``, and a direction left out at that tolerance lies within an angle of about ``ρ`` of
``span(Q)``. So ``rank(Q) ≤ Σ k_e``, ``QᵀQ = I`` and ``‖(I − QQᵀ) Q_e‖ ≈ 0`` for every ``e``.

**Union of singular components.** Experts of the same base model share its SVD
``W = U diag(σ) Vᵀ`` (SVF only rescales ``σ``), so their protected sets are index sets of the
same ``U``, ``V``: the union is ``S = S_1 ∪ … ∪ S_E`` with ``U_S = U[:, S]``, ``V_S = V[:, S]``,
exact, with the soft weight of each index the largest any expert gives it
(:func:`union_of_components`). Its spans equal the union of spans above.

**Weighted.** The union of E selections can protect up to E times one probe's budget. The
weighted rule gives expert ``e`` the share ``w_e / Σw`` of that budget instead
(:meth:`palora.core.probe.SelectionRule.scaled`: ``fraction · w_e``, ``k · w_e``, ``energy · w_e``), then unites: the
protected set is at most one probe's size, less where the experts agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from .subspace import Subspace

#: relative rank tolerance of :func:`orthonormal_span` (see the module docstring)
RANK_RTOL = 1e-5

Basis = Literal["singular", "activation"]


def orthonormal_span(blocks: Sequence[torch.Tensor], rtol: float = RANK_RTOL) -> torch.Tensor:
    """``Q`` (d x k) float32 with orthonormal columns spanning every block (d x k_e) together."""
    d = blocks[0].shape[0]
    M = torch.cat([b.detach().double().cpu() for b in blocks], dim=1)  # (d, Σk)
    if M.shape[1] == 0:
        return torch.zeros(d, 0)
    U, S, _ = torch.linalg.svd(M, full_matrices=False)  # S descending
    keep = S > rtol * S[0] if float(S[0]) > 0 else torch.zeros_like(S, dtype=torch.bool)
    return U[:, keep].float().contiguous()


def union_of_components(subspaces: Sequence[Subspace]) -> Subspace:
    """The union of protected index sets of one matrix (every subspace sliced from the same SVD)."""
    columns: dict[int, tuple[torch.Tensor, torch.Tensor, float | None]] = {}
    for sub in subspaces:
        for j, i in enumerate(sub.indices.tolist()):
            w = None if sub.weights is None else float(sub.weights[j])
            if i in columns:
                u, v, old = columns[i]
                w = None if w is None or old is None else max(w, old)
            else:
                u, v = sub.U[:, j], sub.V[:, j]
            columns[i] = (u, v, w)
    order = sorted(columns)
    m, n = subspaces[0].U.shape[0], subspaces[0].V.shape[0]
    U = torch.stack([columns[i][0] for i in order], 1) if order else torch.zeros(m, 0)
    V = torch.stack([columns[i][1] for i in order], 1) if order else torch.zeros(n, 0)
    ws = [columns[i][2] for i in order]
    weights = None if any(w is None for w in ws) else torch.tensor(ws, dtype=torch.float32)
    return Subspace(torch.tensor(order, dtype=torch.long), U.contiguous(), V.contiguous(), weights)


def union_of_spans(subspaces: Sequence[Subspace]) -> Subspace:
    """``span(U_1) + … `` and ``span(V_1) + …`` by :func:`orthonormal_span`; the indices are the
    positions 0 … k−1 in the new basis and there are no soft weights."""
    U = orthonormal_span([s.U for s in subspaces])
    V = orthonormal_span([s.V for s in subspaces])
    return Subspace(torch.arange(V.shape[1], dtype=torch.long), U, V, None)


def unite(parts: Sequence[dict[str, Subspace]], basis: Basis) -> dict[str, Subspace]:
    """Per target, the union of every part's subspace: of components (``singular``) or of spans."""
    names = list(parts[0])
    for p in parts[1:]:
        if set(p) != set(names):
            raise ValueError(f"the subspaces cover other targets ({sorted(set(p) ^ set(names))[:3]})")
    unite_one = union_of_components if basis == "singular" else union_of_spans
    return {n: unite_one([p[n] for p in parts]) for n in names}


def shares(weights: Sequence[float] | None, n: int) -> list[float]:
    """``w_e / Σw`` (equal shares when ``weights`` is None)."""
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n or any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"need {n} non-negative weights with a positive sum, got {list(w)}")
    return [x / sum(w) for x in w]
