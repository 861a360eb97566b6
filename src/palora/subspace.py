"""The protected subspace of one target matrix: the singular components a skill relies on.

For ``W = U diag(σ) Vᵀ`` and a protected index set ``S`` (chosen by the probe), the subspace
keeps ``U_S = U[:, S]`` (m x k), ``V_S = V[:, S]`` (n x k) and optional soft weights
``w ∈ [0, 1]^k`` (1 = fully protected). Because the SVF expert only rescales singular values,
``U`` and ``V`` are the singular vectors of the expert's weights too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .linalg import SVD


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
