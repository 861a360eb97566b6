"""Row: decomposing every MLP matrix of a Llama-3.1-8B-shaped model with palora.linalg.thin_svd.

32 layers x (gate_proj, up_proj: 14336 x 4096; down_proj: 4096 x 14336), random bf16 weights,
one matrix at a time on the device, as :func:`palora.linalg.iter_svd` does. ``ours``: the sum of
``thin_svd`` times (the cast to float32, gesvda, the check of :func:`palora.linalg.svd_error`,
the exact fallback when the check fails). ``baseline``: the default driver, timed on a few of
the matrices and scaled to all of them. Every factorisation's error is checked afterwards.
"""

from __future__ import annotations

import time

import torch

from palora.linalg import SVD_TOLERANCE, svd_error, thin_svd
from table import Row
from timer import synchronize

#: the target of the issue: all 96 matrices of an 8B model on one H200
BUDGET_S = 15.0


def random_weight(m: int, n: int, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return (0.02 * torch.randn(m, n, generator=g, device=device)).to(dtype)


def decomposition_row(device: torch.device, layers: int = 32, hidden: int = 4096, intermediate: int = 14336,
                      measured_layers: int | None = None, baseline_matrices: int = 2,
                      dtype: torch.dtype = torch.bfloat16) -> Row:
    shapes = [(intermediate, hidden), (intermediate, hidden), (hidden, intermediate)] * layers
    measured = shapes[: 3 * (measured_layers or layers)]
    thin_svd(random_weight(64, 32, 0, device, dtype))  # solver handles and kernels loaded once, untimed
    seconds, worst = 0.0, 0.0
    for i, (m, n) in enumerate(measured):
        W = random_weight(m, n, i, device, dtype)
        synchronize(device)
        start = time.perf_counter()
        svd = thin_svd(W)
        synchronize(device)
        seconds += time.perf_counter() - start
        worst = max(worst, svd_error(W.float(), svd))
        del svd
    exact = 0.0
    for i, (m, n) in enumerate(shapes[:baseline_matrices]):
        A = random_weight(m, n, i, device, dtype).float()
        synchronize(device)
        start = time.perf_counter()
        torch.linalg.svd(A, full_matrices=False)
        synchronize(device)
        exact += time.perf_counter() - start
    ours = seconds * len(shapes) / len(measured)
    baseline = exact * len(shapes) / baseline_matrices
    scaled = "" if len(measured) == len(shapes) else f" (scaled from {len(measured)} measured)"
    row = Row("decomposition", ours, baseline, f"<= {BUDGET_S:g} s, error <= {SVD_TOLERANCE:g}", "s", device.type,
              note=f"{len(shapes)} matrices of {layers} layers {intermediate}x{hidden}{scaled}; default driver scaled "
                   f"from {baseline_matrices}; worst error (reconstruction, orthonormality) {worst:.2e}",
              extra={"max_error": worst, "matrices": len(shapes), "matrices_measured": len(measured)})
    row.ok = ours <= BUDGET_S and worst <= SVD_TOLERANCE
    return row
