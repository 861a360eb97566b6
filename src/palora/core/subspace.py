"""The protected subspace of one target matrix: the singular components a skill relies on.

For ``W = U diag(σ) Vᵀ`` and a protected index set ``S`` (chosen by the probe), the subspace
keeps ``U_S = U[:, S]`` (m x k), ``V_S = V[:, S]`` (n x k) and optional soft weights
``w ∈ [0, 1]^k`` (1 = fully protected). Because the SVF expert only rescales singular values,
``U`` and ``V`` are the singular vectors of the expert's weights too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .linalg import SVD
from .targets import Target


@dataclass
class Subspace:
    indices: torch.Tensor  # (k,) int64, ascending positions in the spectrum (0 = largest σ)
    U: torch.Tensor  # (m, k) float32
    V: torch.Tensor  # (n, k) float32
    weights: torch.Tensor | None = None  # (k,) float32 in [0, 1], for the soft projector

    @property
    def k(self) -> int:
        return int(self.indices.numel())

    @classmethod
    def from_svd(cls, svd: SVD, indices: torch.Tensor, weights: torch.Tensor | None = None) -> Subspace:
        idx = indices.to(dtype=torch.long, device="cpu")
        U = svd.U[:, idx.to(svd.U.device)].float().cpu().contiguous()
        V = svd.V[:, idx.to(svd.V.device)].float().cpu().contiguous()
        return cls(idx.contiguous(), U, V, None if weights is None else weights.float().cpu().contiguous())


def stores_vectors(groups: dict[str, dict[str, torch.Tensor]]) -> bool:
    """Whether a subspace file's groups (:func:`palora.io.artifacts.load_subspace`) hold U_S and V_S."""
    return all("U" in g and "V" in g for g in groups.values())


def from_groups(groups: dict[str, dict[str, torch.Tensor]],
                svds: Iterable[tuple[Target, SVD]] | None = None) -> dict[str, Subspace]:
    """The subspaces of a file's groups: its stored vectors or, for a file of indices only, the
    columns of ``svds`` (the decomposition of the base weights the file was probed on)."""
    if stores_vectors(groups):
        return {n: Subspace(g["indices"], g["U"], g["V"], g.get("weights")) for n, g in groups.items()}
    if svds is None:
        raise ValueError("the subspace stores indices only: pass the decomposition of its base weights")
    return {t.name: Subspace.from_svd(svd, groups[t.name]["indices"], groups[t.name].get("weights"))
            for t, svd in svds}


def with_null_spaces(sub: Subspace, W: torch.Tensor) -> Subspace:
    """``sub`` with the null spaces of ``W`` (m x n, rank ``r = min(m, n)``) added to its two sides.

    With the full SVD ``W = [U | N_out] diag(σ) [V | N_in]ᵀ``, ``N_out`` (m x (m−r)) spans the
    left null space and ``N_in`` (n x (n−r)) the null space; one of them is empty. The result has
    ``U = [U_S | N_out]``, ``V = [V_S | N_in]``, so the two-sided projection away from it,
    ``(I − U Uᵀ) ΔW (I − V Vᵀ) = U_¬S U_¬Sᵀ ΔW V_¬S V_¬Sᵀ``, confines an update to the span of
    the singular components outside S (the *residual basis*). For a wide matrix (``down_proj``:
    n > r) the null space holds inputs that ``P_in = I − V_S V_Sᵀ`` alone leaves open. No soft
    weights: the projector is hard.
    """
    m, n = W.shape
    r = min(m, n)
    full_u, _, full_vh = torch.linalg.svd(W.detach().double(), full_matrices=True)
    n_out, n_in = full_u[:, r:].float(), full_vh[r:, :].T.float()
    return Subspace(sub.indices, torch.cat([sub.U, n_out], 1).contiguous(), torch.cat([sub.V, n_in], 1).contiguous())
