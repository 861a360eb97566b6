"""Orthogonal LoRA: a peft LoRA whose update never touches the protected singular components.

On the expert weight ``W_z`` (m x n) with protected bases ``U_S`` (m x k) and ``V_S`` (n x k):

    ΔW = (α / r) · P_out B A P_in,   P_in = I − V_S V_Sᵀ,   P_out = I − U_S U_Sᵀ

The projection is structural: ``A`` and ``B`` are re-parametrised with
``torch.nn.utils.parametrize`` so that every forward pass uses ``A' = A − (A V_S) V_Sᵀ`` and
``B' = B − U_S (U_Sᵀ B)``, computed on the parameters (4·k·r·d flops, no d x d matrix), never per
token, never by gradient hooks. Inside ``parametrize.cached()`` (the training loop wraps each
micro-batch in it) each projection is computed once per forward/backward; outside it, once per
access of ``.weight`` (peft's LoRA forward reads ``lora_A.weight`` twice: for its dtype, then
in the matmul). With both sides, each protected triplet ``(u_i, σ_i s_i, v_i)``
of ``W_z`` stays a singular triplet of ``W_z + ΔW``:
``(W_z + ΔW) v_i = σ_i s_i u_i`` and ``u_iᵀ (W_z + ΔW) = σ_i s_i v_iᵀ``.

Variants: one side only (``in``: ``B A P_in``; ``out``: ``P_out B A``) and a soft projector
``P = I − V_S diag(w) V_Sᵀ`` with ``w ∈ [0, 1]``. With no subspace at all the same code is plain
peft LoRA, so the baseline and the method share one implementation.

Before saving, :func:`bake_projections` writes ``A'`` and ``B'`` into plain parameters: the
adapter is then a standard peft LoRA adapter that plain peft loads on the expert.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.nn.utils import parametrize

from .linalg import remove_component
from .subspace import Subspace
from .targets import Target, find_targets

Side = Literal["both", "in", "out"]
ADAPTER_NAME = "default"


class ProjectAway(nn.Module):
    """Parametrisation ``X ↦ X (I − Q diag(w) Qᵀ)`` (rows) or ``(I − Q diag(w) Qᵀ) X`` (columns)."""

    def __init__(self, Q: torch.Tensor, w: torch.Tensor | None, rows: bool):
        super().__init__()
        self.rows = rows
        # float32 whatever the model's dtype: a bf16 basis is orthonormal only to ~1e-3, which
        # would be the certificate's floor. A Subspace's float32 tensors on the adapter's device
        # are kept as they are (no copy); on another device, one copy is made there.
        self.register_buffer("Q", Q.float().contiguous())  # (d, k), orthonormal columns
        self.register_buffer("w", None if w is None else w.float().contiguous())  # (k,)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return remove_component(X, self.Q, self.w, rows=self.rows)


def lora_config(
    targets: list[Target], rank: int, alpha: float, dropout: float = 0.0, task_type: str | None = "CAUSAL_LM",
    **init: Any,
) -> LoraConfig:
    """The peft ``LoraConfig`` of every LoRA palora builds; ``init`` passes peft's initialisation
    options (``init_lora_weights="pissa"``, ``corda_config=...``) for the baselines."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=[t.name for t in targets],
        fan_in_fan_out=any(t.transposed for t in targets),
        bias="none",
        task_type=task_type,
        **init,
    )


def add_lora(
    model: nn.Module,
    targets: list[Target],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    subspaces: dict[str, Subspace] | None = None,
    side: Side = "both",
    soft: bool = False,
    task_type: str | None = "CAUSAL_LM",
    init: dict[str, Any] | None = None,
) -> PeftModel:
    """Wrap ``model`` in a peft LoRA on ``targets``; with ``subspaces``, project it (orthogonal LoRA).

    Seed torch before calling: ``A`` is initialised by peft (Kaiming uniform), ``B = 0``, unless
    ``init`` passes another of peft's initialisations (``{"init_lora_weights": "pissa"}``).
    ``task_type=None`` wraps any ``nn.Module`` (a plain ``PeftModel``), not only a causal LM.
    """
    peft_model = get_peft_model(model, lora_config(targets, rank, alpha, dropout, task_type, **(init or {})))
    for name, sub in (subspaces or {}).items():
        layer = lora_layer(peft_model, name)
        A, B = layer.lora_A[ADAPTER_NAME], layer.lora_B[ADAPTER_NAME]
        device = A.weight.device  # registering evaluates the projection once: the basis goes there first
        w = sub.weights.to(device) if soft and sub.weights is not None else None
        if side in ("both", "in") and sub.V.shape[1] > 0:  # A is (r, n): remove its components along V_S
            parametrize.register_parametrization(A, "weight", ProjectAway(sub.V.to(device), w, rows=True))
        if side in ("both", "out") and sub.U.shape[1] > 0:  # B is (m, r): remove its components along U_S
            parametrize.register_parametrization(B, "weight", ProjectAway(sub.U.to(device), w, rows=False))
    return peft_model


def add_orthogonal_lora(
    model: nn.Module,
    subspaces: dict[str, Subspace],
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.0,
    side: Side = "both",
    soft: bool = False,
    target_modules: list[str] | None = None,
) -> PeftModel:
    """PALoRA's injection adapter: peft LoRA on the targets, projected away from ``subspaces``."""
    targets = find_targets(model, target_modules)
    missing = [t.name for t in targets if t.name not in subspaces]
    if missing:
        raise KeyError(f"no protected subspace for {missing[0]} (and {len(missing) - 1} more)")
    return add_lora(model, targets, rank, alpha, dropout, subspaces=subspaces, side=side, soft=soft)


def lora_layer(peft_model: PeftModel, name: str) -> LoraLayer:
    layer = peft_model.base_model.model.get_submodule(name)
    if not isinstance(layer, LoraLayer):
        raise KeyError(f"{name} carries no LoRA layer")
    return layer


@torch.no_grad()
def lora_delta(peft_model: PeftModel, name: str) -> torch.Tensor:
    """``ΔW = (α/r) B' A'`` (m x n, float32) of one target, with the projections applied."""
    layer = lora_layer(peft_model, name)
    A = layer.lora_A[ADAPTER_NAME].weight.float()  # (r, n)
    B = layer.lora_B[ADAPTER_NAME].weight.float()  # (m, r)
    return layer.scaling[ADAPTER_NAME] * (B @ A)


@torch.no_grad()
def certificate(delta: torch.Tensor, sub: Subspace) -> tuple[float, float]:
    """``(‖U_Sᵀ ΔW‖ / ‖ΔW‖, ‖ΔW V_S‖ / ‖ΔW‖)``: both at rounding level for ``side='both'``."""
    norm = torch.linalg.matrix_norm(delta).clamp_min(1e-30)
    out_side = torch.linalg.matrix_norm(sub.U.to(delta).T @ delta) / norm
    in_side = torch.linalg.matrix_norm(delta @ sub.V.to(delta)) / norm
    return float(out_side), float(in_side)


def projected_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``lora_A``/``lora_B`` whose weight carries a :class:`ProjectAway`."""
    return [
        (name, module) for name, module in model.named_modules()
        if parametrize.is_parametrized(module, "weight")
        and any(isinstance(p, ProjectAway) for p in module.parametrizations["weight"])
    ]


def bake_projections(peft_model: PeftModel) -> None:
    """Replace each projected ``A``/``B`` by its projected value, as plain parameters (in place).

    The model is then plain LoRA: further training would leave the subspace. To save while
    training goes on, use :func:`projected_state_dict` instead.
    """
    for _, module in projected_modules(peft_model):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


@torch.no_grad()
def projected_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as :func:`bake_projections` would leave it, without changing the model.

    Each projected module's ``parametrizations.*`` entries (the raw ``A``/``B`` and the bases)
    are replaced by one ``<module>.weight``, its projected value ``A'`` or ``B'``; passed to
    peft's ``save_pretrained(..., state_dict=...)`` this writes a plain LoRA adapter.
    """
    state = model.state_dict()
    for name, module in projected_modules(model):
        for key in module.parametrizations.state_dict(prefix=f"{name}.parametrizations."):
            del state[key]
        state[f"{name}.weight"] = module.weight.detach().clone()  # A' or B', computed now
    return state
