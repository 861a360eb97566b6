"""Pure linear algebra: the thin SVD of a target matrix, projectors, and weight fingerprints.

``W = U diag(σ) Vᵀ`` with ``W`` (m x n), ``r = min(m, n)``, ``U`` (m x r), ``σ`` (r,) in
descending order, ``V`` (n x r). Decompositions always run in float32: the factors of a bf16
matrix computed in bf16 are not orthonormal enough for the projection guarantee.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .targets import Target, weight_matrix

#: Relative reconstruction error above which a fast driver's result is recomputed exactly.
SVD_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SVD:
    U: torch.Tensor  # (m, r) float32
    S: torch.Tensor  # (r,)   float32, descending
    V: torch.Tensor  # (n, r) float32

    def reconstruct(self, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``U diag(σ ⊙ scale) Vᵀ`` (m x n)."""
        s = self.S if scale is None else self.S * scale
        return (self.U * s) @ self.V.T


def relative_error(W: torch.Tensor, svd: SVD) -> float:
    return float(torch.linalg.matrix_norm(W - svd.reconstruct()) / torch.linalg.matrix_norm(W).clamp_min(1e-30))


def thin_svd(W: torch.Tensor, device: torch.device | str | None = None) -> SVD:
    """Thin SVD of ``W`` (m x n) in float32 on ``device`` (default: where ``W`` is).

    On CUDA the fast ``gesvda`` cuSOLVER driver is tried first and its reconstruction is checked;
    an error above :data:`SVD_TOLERANCE` falls back to the exact default driver.
    """
    A = W.detach().to(device=device or W.device, dtype=torch.float32)
    if A.is_cuda:
        U, S, Vh = torch.linalg.svd(A, full_matrices=False, driver="gesvda")
        out = SVD(U, S, Vh.T)
        if relative_error(A, out) <= SVD_TOLERANCE and torch.isfinite(S).all():
            return out
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return SVD(U, S, Vh.T)


def default_device() -> torch.device | None:
    """Where decompositions run when not told: the GPU when there is one (cuSOLVER is far faster)."""
    return torch.device("cuda") if torch.cuda.is_available() else None


def iter_svd(targets: Iterable[Target], device: torch.device | str | None = None) -> Iterator[tuple[Target, SVD]]:
    """Decompose one target at a time, so that all factors are never held at once.

    ``device`` defaults to :func:`default_device`; the factors are left there.
    """
    device = device if device is not None else default_device()
    for t in targets:
        yield t, thin_svd(weight_matrix(t.module), device=device)


def remove_component(X: torch.Tensor, Q: torch.Tensor, w: torch.Tensor | None, rows: bool) -> torch.Tensor:
    """Project ``X`` away from the orthonormal columns of ``Q``.

    ``rows=True``  (X is r x n, Q is n x k): ``X (I − Q diag(w) Qᵀ) = X − ((X Q) ⊙ w) Qᵀ``.
    ``rows=False`` (X is m x r, Q is m x k): ``(I − Q diag(w) Qᵀ) X = X − Q (w ⊙ (Qᵀ X))``.
    ``w = None`` means all ones (the hard projector). Costs O(k·r·d), never a d x d matrix.
    """
    Q = Q.to(X.dtype)
    if rows:
        c = X @ Q  # (r, k)
        if w is not None:
            c = c * w.to(X.dtype)
        return X - c @ Q.T
    c = Q.T @ X  # (k, r)
    if w is not None:
        c = c * w.to(X.dtype)[:, None]
    return X - Q @ c


def fingerprint(targets: Iterable[Target]) -> str:
    """sha256 over the names, shapes, dtypes and raw bytes of the target weights (16 hex digits).

    Two models share a fingerprint exactly when their adapted matrices are bit-identical, which
    is what an expert, a subspace or an adapter made for one of them needs of the other.
    """
    h = hashlib.sha256()
    for t in targets:
        w = t.module.weight.detach()
        h.update(f"{t.name}|{tuple(w.shape)}|{w.dtype}|".encode())
        raw = w.to("cpu").contiguous().view(torch.uint8).reshape(-1)
        h.update(raw.numpy())  # buffer protocol: no copy
    return h.hexdigest()[:16]
