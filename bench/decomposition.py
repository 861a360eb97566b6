"""Rows: decomposing every target matrix with palora.core.linalg.thin_svd, the error checked.

* ``decomposition``: every MLP matrix of a Llama-3.1-8B-shaped model, 32 layers x (gate_proj,
  up_proj: 14336 x 4096; down_proj: 4096 x 14336), random bf16 weights, one matrix at a time on
  the device, as :func:`palora.core.linalg.iter_svd` does. ``ours``: the sum of ``thin_svd`` times
  (the cast to float32, the fast driver, the check of :func:`palora.core.linalg.svd_error`, the exact
  fallback when the check fails), measured on some of the matrices and scaled to all of them.
  ``baseline`` (CUDA): the default driver, timed on a few of the matrices and scaled. On the CPU
  ``thin_svd`` *is* the default driver (LAPACK's gesdd), so there is no baseline, and the
  issue's 15 s budget, which is for one H200, is not judged: the row shows what the same job
  costs without a GPU.
* ``decomposition_model``: the target matrices of the loaded model (the CPU rows' SmolLM2),
  every one measured.

Every factorisation's error is checked after it is timed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import nn

from palora.core.linalg import SVD, SVD_TOLERANCE, svd_error, thin_svd
from palora.core.targets import find_targets, weight_matrix
from table import Row
from timer import synchronize

#: the target of the issue: all 96 matrices of an 8B model on one H200
BUDGET_S = 15.0


def random_weight(m: int, n: int, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return (0.02 * torch.randn(m, n, generator=g, device=device)).to(dtype)


def timed_thin_svd(weights: Iterable[tuple[str, torch.Tensor]], device: torch.device, keep: bool = False
                   ) -> tuple[float, float, dict[str, SVD]]:
    """Seconds spent in ``thin_svd`` over the named ``weights``, the worst :func:`svd_error`, and
    the factors by name when ``keep`` (else none: an 8B matrix's take about 300 MB in float32)."""
    thin_svd(torch.ones(64, 32, device=device))  # solver handles and kernels loaded once, untimed
    seconds, worst, kept = 0.0, 0.0, {}
    for name, W in weights:
        synchronize(device)
        start = time.perf_counter()
        svd = thin_svd(W, device=device)
        synchronize(device)
        seconds += time.perf_counter() - start
        worst = max(worst, svd_error(W.to(device=device, dtype=torch.float32), svd))
        if keep:
            kept[name] = svd
        del svd
    return seconds, worst, kept


def decomposition_row(device: torch.device, layers: int = 32, hidden: int = 4096, intermediate: int = 14336,
                      measured_matrices: int | None = None, baseline_matrices: int = 2,
                      dtype: torch.dtype = torch.bfloat16) -> Row:
    """The 8B-shaped row: ``measured_matrices`` of the ``3·layers`` timed (None: all), scaled to all;
    the default driver timed on ``baseline_matrices`` (0 on the CPU, where it is what ``thin_svd`` runs)."""
    shapes = [(intermediate, hidden), (intermediate, hidden), (hidden, intermediate)] * layers
    measured = shapes[: measured_matrices or len(shapes)]
    seconds, worst, _ = timed_thin_svd(((str(i), random_weight(m, n, i, device, dtype))
                                        for i, (m, n) in enumerate(measured)), device)
    ours = seconds * len(shapes) / len(measured)
    baseline = None
    if baseline_matrices:
        exact = 0.0
        for i, (m, n) in enumerate(shapes[:baseline_matrices]):
            A = random_weight(m, n, i, device, dtype).float()
            synchronize(device)
            start = time.perf_counter()
            torch.linalg.svd(A, full_matrices=False)
            synchronize(device)
            exact += time.perf_counter() - start
        baseline = exact * len(shapes) / baseline_matrices
    scaled = "" if len(measured) == len(shapes) else f" (scaled from {len(measured)} measured)"
    on_gpu = device.type == "cuda"  # the budget is the issue's, for one H200
    target = f"<= {BUDGET_S:g} s, error <= {SVD_TOLERANCE:g}" if on_gpu else f"error <= {SVD_TOLERANCE:g}"
    against = (f"default driver scaled from {baseline_matrices}" if baseline_matrices
               else "no baseline (on the CPU thin_svd is the default driver)")
    budget = "" if on_gpu else "; the 15 s budget is for one H200, not judged here"
    row = Row("decomposition", ours, baseline, target, "s", device.type,
              note=f"{len(shapes)} matrices of {layers} layers {intermediate}x{hidden}{scaled}; {against}; "
                   f"worst error (reconstruction, orthonormality) {worst:.2e}{budget}",
              extra={"max_error": worst, "matrices": len(shapes), "matrices_measured": len(measured)})
    row.ok = worst <= SVD_TOLERANCE and (not on_gpu or ours <= BUDGET_S)
    return row


def model_decomposition(model: nn.Module, model_name: str, device: torch.device) -> tuple[dict[str, SVD], Row]:
    """The factors of every target matrix of ``model`` by name (the other rows use them), and the
    row that times them, each one."""
    weights = [(t.name, weight_matrix(t.module)) for t in find_targets(model)]
    seconds, worst, svds = timed_thin_svd(weights, device, keep=True)
    shapes = sorted({tuple(w.shape) for _, w in weights})
    row = Row("decomposition_model", seconds, None, f"error <= {SVD_TOLERANCE:g}", "s", device.type,
              note=f"the {len(svds)} target matrices of {model_name} ({', '.join(f'{m}x{n}' for m, n in shapes)}), "
                   f"thin_svd one at a time; worst error (reconstruction, orthonormality) {worst:.2e}",
              extra={"max_error": worst, "matrices": len(svds)})
    row.ok = worst <= SVD_TOLERANCE
    return svds, row
