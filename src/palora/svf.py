"""Singular Value Fine-tuning (SVF): one learnable scale per singular value of a weight.

For a target ``W = U diag(σ) Vᵀ`` (m x n, rank r) the expert weight is

    W_z = U diag(σ ⊙ s(z)) Vᵀ

with the effective scale ``s(z)`` given by the parametrisation:

* ``linear``: ``s = z``, ``z`` initialised to 1;
* ``t2`` (Transformer²): ``s = sigmoid(z) · κ``, ``κ = Σσ / Σ(σ ⊙ sigmoid(z))`` (the sum of the
  singular values is preserved), ``z`` initialised to a constant (0.1), where ``s = 1`` exactly.

The forward pass is factored, ``y = ((x V) ⊙ σs) Uᵀ + b``, so that ``W_z`` is never formed while
training; :meth:`SVFLinear.merged_weight` forms it once for the merge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import ArtifactError
from .linalg import SVD, iter_svd
from .targets import find_targets, replace_module, set_weight_matrix

Parametrization = Literal["linear", "t2"]


def effective_scale(z: torch.Tensor, sigma: torch.Tensor, parametrization: Parametrization) -> torch.Tensor:
    """``s(z)`` of the module docstring, in float32."""
    z = z.float()
    if parametrization == "linear":
        return z
    if parametrization == "t2":
        m = torch.sigmoid(z)
        return m * (sigma.sum() / (sigma * m).sum())
    raise ValueError(f"unknown SVF parametrization {parametrization!r}")


class SVFLinear(nn.Module):
    """A linear layer (``nn.Linear`` or GPT-2 ``Conv1D``) whose singular values are rescaled.

    Owns one parameter, ``z`` (r,) float32, which must never be weight-decayed (decay would pull
    ``s`` towards 0 and shrink the singular values). ``U``, ``sigma``, ``V`` are frozen buffers;
    ``base_layer`` keeps the original module for its bias and for :func:`merge_svf`.
    """

    def __init__(self, base_layer: nn.Module, svd: SVD, parametrization: Parametrization, t2_init: float = 0.1):
        super().__init__()
        self.base_layer = base_layer
        self.parametrization: Parametrization = parametrization
        dtype = base_layer.weight.dtype
        device = base_layer.weight.device
        # Factors in the model's dtype for the matmuls; σ and z stay float32 (their product is
        # formed in float32 and cast once per forward).
        self.register_buffer("U", svd.U.to(device=device, dtype=dtype), persistent=False)  # (m, r)
        self.register_buffer("V", svd.V.to(device=device, dtype=dtype), persistent=False)  # (n, r)
        self.register_buffer("sigma", svd.S.to(device=device, dtype=torch.float32), persistent=False)
        init = 1.0 if parametrization == "linear" else t2_init
        self.z = nn.Parameter(torch.full_like(self.sigma, init))
        effective_scale(self.z, self.sigma, parametrization)  # validates the name early

    def no_decay_parameters(self) -> list[nn.Parameter]:
        """Parameters this module owns that weight decay must not touch."""
        return [self.z]

    def scale(self) -> torch.Tensor:
        return effective_scale(self.z, self.sigma, self.parametrization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = (self.sigma * self.scale()).to(x.dtype)  # (r,)
        h = x @ self.V  # (..., n) -> (..., r)
        y = (h * gain) @ self.U.T  # (..., r) -> (..., m)
        bias = self.base_layer.bias
        return y if bias is None else y + bias

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W_z = U diag(σ s) Vᵀ`` (m x n), computed in float32."""
        return (self.U.float() * (self.sigma * self.scale())) @ self.V.float().T


def add_svf(
    model: nn.Module,
    parametrization: Parametrization = "linear",
    target_modules: list[str] | None = None,
    t2_init: float = 0.1,
    progress: bool = True,
    decompose: Callable | None = None,
) -> dict[str, SVFLinear]:
    """Replace every target matrix of ``model`` by an :class:`SVFLinear` and freeze the rest.

    Decomposes one matrix at a time on the matrix's own device. Returns the new layers by name.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    targets = find_targets(model, target_modules)
    layers: dict[str, SVFLinear] = {}
    it = (decompose or iter_svd)(targets)
    for t, svd in tqdm(it, total=len(targets), desc="decompose", disable=not progress, unit="matrix"):
        layer = SVFLinear(t.module, svd, parametrization, t2_init)
        replace_module(model, t.name, layer)
        layers[t.name] = layer
    return layers


def svf_layers(model: nn.Module) -> dict[str, SVFLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SVFLinear)}


@torch.no_grad()
def merge_svf(model: nn.Module) -> nn.Module:
    """Write every ``W_z`` into its base layer and put the base layers back (exact merge).

    The merged model is a stock transformers model with the original parameter names.
    """
    for name, layer in svf_layers(model).items():
        set_weight_matrix(layer.base_layer, layer.merged_weight())
        replace_module(model, name, layer.base_layer)
    return model


def svf_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<name>.z": z, "<name>.sigma": σ}`` of every SVF layer (float32, on CPU)."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in svf_layers(model).items():
        state[f"{name}.z"] = layer.z.detach().float().cpu().contiguous()
        state[f"{name}.sigma"] = layer.sigma.detach().float().cpu().contiguous()
    return state


@torch.no_grad()
def load_svf_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Set ``z`` of every SVF layer from ``state``; the layer names must match exactly."""
    layers = svf_layers(model)
    names = {k.rsplit(".", 1)[0] for k in state}
    if names != set(layers):
        missing = sorted(set(layers) - names)[:3]
        extra = sorted(names - set(layers))[:3]
        raise ArtifactError(f"SVF state does not match the model's targets (missing {missing}, unexpected {extra})")
    for name, layer in layers.items():
        z = state[f"{name}.z"]
        if z.shape != layer.z.shape:
            raise ArtifactError(f"{name}.z has shape {tuple(z.shape)}, the layer needs {tuple(layer.z.shape)}")
        layer.z.copy_(z)
