"""Sequential knowledge updates: keep a new LoRA update away from an earlier round's update.

An earlier round left, on a target ``W`` (m x n), the update ``ΔW₁ = s₁ B₁ A₁`` (``B₁`` m x r,
``A₁`` r x n, ``s₁ = α/r``). With the thin QR factorisations ``B₁ = Q_B R_B``, ``A₁ᵀ = Q_A R_A``
and the SVD of the r x r core ``s₁ R_B R_Aᵀ = X Σ Yᵀ``,

    ΔW₁ = (Q_B X) Σ (Q_A Y)ᵀ

is the thin SVD of ``ΔW₁``, found in O((m + n) r²) flops without forming ``ΔW₁``. Keeping the
singular values above ``ρ · Σ_max`` (``ρ`` = :data:`palora.core.combine.RANK_RTOL`), ``U₁ = Q_B X``
and ``V₁ = Q_A Y`` are orthonormal bases of its column space and its row space
(:func:`update_spaces`; a projected PALoRA adapter, whose ``A₁`` may lose rank, is handled alike).

The next round trains ``ΔW₂ = s₂ P_out B₂ A₂ P_in`` (:mod:`palora.core.orthogonal`) with
``P_out = I − Q_out Q_outᵀ`` and ``P_in = I − Q_in Q_inᵀ``, where ``Q_out`` spans ``span(U₁)``
and ``Q_in`` spans ``span(V₁)``, each united with the skill's ``U_S`` / ``V_S`` for PALoRA
(:func:`protected_spaces`, by :func:`palora.core.combine.orthonormal_span`). Then

    U₁ᵀ ΔW₂ = 0   and   ΔW₂ V₁ = 0,

the certificate :func:`adapter_certificate` measures: the new update writes nothing into the
directions the first one wrote, and for inputs ``x`` in the row space of ``ΔW₁`` the model
computes ``(W + ΔW₁) x`` exactly as after the first round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from .combine import RANK_RTOL, orthonormal_span
from .orthogonal import ADAPTER_NAME, Side, certificate
from .subspace import Subspace


@dataclass
class UpdateSpaces:
    """Orthonormal bases of an update's column space ``U`` (m x k) and row space ``V`` (n x k)
    and its nonzero singular values ``S`` (k,), float32: ``ΔW = U diag(S) Vᵀ``."""

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor


def update_spaces(A: torch.Tensor, B: torch.Tensor, scaling: float, rtol: float = RANK_RTOL) -> UpdateSpaces:
    """The thin SVD of ``ΔW = scaling · B A`` from its factors ``A`` (r x n), ``B`` (m x r), in float64."""
    QB, RB = torch.linalg.qr(B.detach().double().cpu())  # (m, r), (r, r)
    QA, RA = torch.linalg.qr(A.detach().double().cpu().T)  # (n, r), (r, r)
    X, S, Yh = torch.linalg.svd(scaling * RB @ RA.T)  # the r x r core
    keep = S > rtol * S[0] if float(S[0]) > 0 else torch.zeros_like(S, dtype=torch.bool)
    U = (QB @ X[:, keep]).float().contiguous()  # (m, k)
    V = (QA @ Yh.T[:, keep]).float().contiguous()  # (n, k)
    return UpdateSpaces(U, S[keep].float(), V)


def adapter_spaces(peft_model: PeftModel) -> dict[str, UpdateSpaces]:
    """:func:`update_spaces` of every LoRA layer of ``peft_model``, by target name (before merging)."""
    spaces = {}
    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
            A = module.lora_A[ADAPTER_NAME].weight  # (r, n)
            B = module.lora_B[ADAPTER_NAME].weight  # (m, r)
            spaces[name] = update_spaces(A, B, float(module.scaling[ADAPTER_NAME]))
    return spaces


def protected_spaces(
    skill: Subspace | None, earlier: UpdateSpaces | None, shape: tuple[int, int],
    skill_side: Side = "both", earlier_side: Side | None = "both",
) -> Subspace:
    """One hard-projector subspace for a target of ``shape`` (m, n): ``Q_out`` spans the skill's
    ``U_S`` (when ``skill_side`` protects the out side) and the earlier update's ``U₁`` (when
    ``earlier_side`` does), ``Q_in`` likewise with ``V_S`` and ``V₁``; ``earlier_side=None``
    leaves the earlier update unprotected. Apply it with ``side="both"``: the sides are chosen here."""
    m, n = shape
    out_blocks, in_blocks = [torch.zeros(m, 0)], [torch.zeros(n, 0)]
    for sub, side in ((skill, skill_side), (earlier, earlier_side)):
        if sub is None or side is None:
            continue
        if side in ("both", "out"):
            out_blocks.append(sub.U)
        if side in ("both", "in"):
            in_blocks.append(sub.V)
    U, V = orthonormal_span(out_blocks), orthonormal_span(in_blocks)
    return Subspace(torch.arange(V.shape[1], dtype=torch.long), U, V, None)


def adapter_certificate(delta: torch.Tensor, earlier: UpdateSpaces) -> tuple[float, float]:
    """``(‖U₁ᵀ ΔW₂‖ / ‖ΔW₂‖, ‖ΔW₂ V₁‖ / ‖ΔW₂‖)``: both at rounding level when both sides are protected."""
    return certificate(delta, Subspace(torch.arange(earlier.V.shape[1]), earlier.U, earlier.V))
