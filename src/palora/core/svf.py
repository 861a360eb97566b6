"""Singular Value Fine-tuning (SVF): one learnable scale per singular value of a weight.

For a target ``W = U diag(σ) Vᵀ`` (m x n, rank r) the expert weight is

    W_z = U diag(σ ⊙ s(z)) Vᵀ

with the effective scale ``s(z)`` given by the parametrisation:

* ``linear``: ``s = z``, ``z`` initialised to 1;
* ``t2`` (Transformer²): ``s = sigmoid(z) · κ``, ``κ = Σσ / Σ(σ ⊙ sigmoid(z))`` (the sum of the
  singular values is preserved), ``z`` initialised to a constant (0.1), where ``s = 1`` exactly.

Each forward pass takes whichever of two exact forms costs fewer flops (:func:`svf_path`):

* factored:   ``y = ((x V) ⊙ σs) Uᵀ + b``, ``W_z`` never formed;
* recomposed: ``y = x W_zᵀ + b`` with ``W_z = (U ⊙ σs) Vᵀ`` formed anew on every call.

:meth:`SVFLinear.merged_weight` forms ``W_z`` once, in float32, for the merge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ArtifactError
from .linalg import SVD, iter_svd
from .targets import find_targets, replace_module, set_weight_matrix

Parametrization = Literal["linear", "t2"]
SVFPath = Literal["factored", "recomposed"]


def effective_scale(z: torch.Tensor, sigma: torch.Tensor, parametrization: Parametrization) -> torch.Tensor:
    """``s(z)`` of the module docstring, in float32."""
    z = z.float()
    if parametrization == "linear":
        return z
    if parametrization == "t2":
        m = torch.sigmoid(z)
        return m * (sigma.sum() / (sigma * m).sum())
    raise ValueError(f"unknown SVF parametrization {parametrization!r}")


def svf_flops(tokens: int, m: int, n: int, r: int, grad_z: bool, grad_x: bool) -> tuple[int, int]:
    """``(factored, recomposed)``: flops of one SVF forward (and its backward when gradients flow).

    For ``T`` tokens, ``W`` m x n of rank r (a matmul (a x b)(b x c) costs 2abc):

    ==========================  =================  ===============================
    term                        factored           recomposed
    ==========================  =================  ===============================
    forward                     2·T·r·(m + n)      2·m·n·r (W_z) + 2·T·m·n
    backward, for ∂z            2·T·m·r (∂y U)     2·T·m·n (∂W_z) + 2·m·n·r
    backward, for ∂x            + 2·T·n·r          2·T·m·n (∂y W_z)
    ==========================  =================  ===============================

    (``∂x`` of the factored form reuses ``∂y U``.) Without gradients, recomposition wins once
    ``T > m·n·r / (r·(m + n) − m·n)``: T > 1,536 for SmolLM2's 1536 x 576, T > 14,336 for
    Llama-3.1-8B's 14336 x 4096. In training with ``∂x`` the factored form costs
    ``4·T·r·(m+n)`` against ``4·m·n·r + 6·T·m·n`` and wins at every T on both models.
    """
    factored = 2 * tokens * r * (m + n)
    recomposed = 2 * m * n * r + 2 * tokens * m * n
    if grad_z or grad_x:
        factored += 2 * tokens * m * r
    if grad_x:
        factored += 2 * tokens * n * r
        recomposed += 2 * tokens * m * n
    if grad_z:
        recomposed += 2 * tokens * m * n + 2 * m * n * r
    return factored, recomposed


def svf_path(tokens: int, m: int, n: int, r: int, grad_z: bool, grad_x: bool) -> SVFPath:
    """The cheaper form by :func:`svf_flops` (ties go to ``factored``, which forms no m x n matrix)."""
    factored, recomposed = svf_flops(tokens, m, n, r, grad_z, grad_x)
    return "factored" if factored <= recomposed else "recomposed"


class SVFLinear(nn.Module):
    """A linear layer (``nn.Linear`` or GPT-2 ``Conv1D``) whose singular values are rescaled.

    Owns one parameter, ``z`` (r,) float32, which must never be weight-decayed (decay would pull
    ``s`` towards 0 and shrink the singular values). ``U``, ``sigma``, ``V`` are frozen buffers;
    ``base_layer`` keeps the original module for its bias and for :func:`merge_svf`.

    ``forward`` computes ``y = x W_zᵀ + b`` by the factored or the recomposed form, chosen per call
    by :func:`svf_path` from the token count ``T``, the shape and whether gradients flow; the two
    give the same output and the same ``∂z`` up to rounding. Set ``path`` to force one of them.
    Recomposition keeps ``W_z`` (m x n) alive for the backward pass, one matrix per layer.
    """

    def __init__(self, base_layer: nn.Module, svd: SVD, parametrization: Parametrization, t2_init: float = 0.1):
        super().__init__()
        self.base_layer = base_layer
        self.parametrization: Parametrization = parametrization
        #: ``None``: choose per call by :func:`svf_path`; ``"factored"``/``"recomposed"``: always that form
        self.path: SVFPath | None = None
        #: ``True`` inside :func:`identity_scales`: ``s = 1``, the layer computes with the base weight
        self.identity = False
        dtype = base_layer.weight.dtype
        device = base_layer.weight.device
        # dtypes, deliberately:
        # - U, V in the model's dtype: they only ever meet activations of that dtype in a matmul, so
        #   a bf16 model keeps them in bf16 (half the bytes of float32, no cast, i.e. no copy of U
        #   and V, per call). Their rounding (2^-9 relative) is that of the bf16 weights the model
        #   runs on anyway. On a float32 model `.to` returns the SVD's own tensors (no copy).
        # - σ and z in float32: s(z) (the t2 normalisation sums r terms) and the gain σ·s are
        #   formed in float32 and cast once per call to the input dtype; Adam updates z in float32.
        # Where precision must exceed the model dtype it is kept: the SVD itself and the merge
        # (merged_weight) run in float32, and so do the probe's protected bases.
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
        if self.identity:
            return torch.ones_like(self.sigma)
        return effective_scale(self.z, self.sigma, self.parametrization)

    def choose_path(self, x: torch.Tensor) -> SVFPath:
        """The form :meth:`forward` uses for input ``x`` (..., n)."""
        if self.path is not None:
            return self.path
        (m, r), n = self.U.shape, self.V.shape[0]
        grad = torch.is_grad_enabled()
        return svf_path(x.numel() // n, m, n, r, grad_z=grad and self.z.requires_grad,
                        grad_x=grad and x.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = (self.sigma * self.scale()).to(x.dtype)  # (r,) float32 -> the input dtype, once
        bias = self.base_layer.bias
        if self.choose_path(x) == "recomposed":
            W = (self.U * gain) @ self.V.T  # (m, r) (r, n) -> (m, n)
            return nn.functional.linear(x, W, bias)  # (..., n) -> (..., m)
        h = x @ self.V  # (..., n) -> (..., r)
        y = (h * gain) @ self.U.T  # (..., r) -> (..., m)
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


@contextmanager
def identity_scales(model: nn.Module) -> Iterator[None]:
    """Inside the block every SVF layer of ``model`` uses ``s = 1``: ``W = U diag(σ) Vᵀ``, the base
    weight (up to the SVD's rounding), whatever ``z`` holds. The base model without a second copy,
    e.g. for the KL penalty of :mod:`palora.training.reinforce`; ``z`` receives no gradient in the block."""
    layers = list(svf_layers(model).values())
    for layer in layers:
        layer.identity = True
    try:
        yield
    finally:
        for layer in layers:
            layer.identity = False


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
