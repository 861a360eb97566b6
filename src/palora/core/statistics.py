"""Statistics of the skill's own data per singular component, measured through the SVF expert.

For a target ``W_z = U diag(σ ⊙ s) Vᵀ`` and the inputs ``x`` the skill data sends into it:

* activation energy ``e_i = E_x[(v_iᵀ x)²]`` (over non-padding tokens): how much of the skill's
  input lies along ``v_i``. Component ``i`` contributes ``(σ_i s_i)² e_i`` to the expert's output
  energy ``E‖W_z x‖²`` on the skill, which is the ``activation`` score of :mod:`palora.core.probe`;
* Fisher information ``f_i = E_batch[(∂L_skill/∂z_i)²]``: how sensitive the skill's loss is to
  component ``i``'s scale.

Both are computed on a model carrying :class:`~palora.core.svf.SVFLinear` layers (the expert before
its merge), so component ``i`` here is exactly component ``i`` of the saved expert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .svf import svf_layers


@torch.no_grad()
def _for_each_input(
    model: nn.Module,
    modules: dict[str, nn.Module],
    batches: Iterable[dict[str, torch.Tensor]],
    visit: Callable[[str, nn.Module, torch.Tensor], None],
    desc: str,
    progress: bool,
) -> int:
    """Run ``model`` over ``batches`` and call ``visit(name, module, x)`` with each module's input
    rows ``x`` (tokens, n) of the non-padding tokens; returns the number of tokens seen."""
    mask: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(module, inputs, output):
            x = inputs[0]  # (B, T, n)
            visit(name, module, x[mask["m"]])  # -> (tokens, n)

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(list(batches), desc=desc, disable=not progress, unit="batch"):
            mask["m"] = batch["attention_mask"].bool()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            tokens += int(mask["m"].sum())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return tokens


def activation_energy(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], progress: bool = True) -> dict[str, torch.Tensor]:
    """``E[(v_iᵀ x)²]`` (r,) float32 per SVF layer, over the non-padding tokens of ``batches``."""
    layers = svf_layers(model)
    sums = {name: torch.zeros_like(layer.sigma) for name, layer in layers.items()}

    def visit(name: str, layer: nn.Module, x: torch.Tensor) -> None:
        sums[name] += ((x @ layer.V).float() ** 2).sum(0)  # (tokens, n) -> (r,)

    tokens = _for_each_input(model, layers, batches, visit, "activations", progress)
    return {name: s / max(tokens, 1) for name, s in sums.items()}


def fisher_information(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], progress: bool = True) -> dict[str, torch.Tensor]:
    """``E_batch[(∂L/∂z_i)²]`` (r,) float32 per SVF layer; ``z`` is left unchanged."""
    layers = svf_layers(model)
    sums = {name: torch.zeros_like(layer.sigma) for name, layer in layers.items()}
    n = 0
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(list(batches), desc="fisher", disable=not progress, unit="batch"):
            for layer in layers.values():
                layer.z.grad = None
            model(**batch).loss.backward()
            for name, layer in layers.items():
                sums[name] += layer.z.grad.detach().float() ** 2
            n += 1
    finally:
        for layer in layers.values():
            layer.z.grad = None
        model.train(was_training)
    return {name: s / max(n, 1) for name, s in sums.items()}


def input_covariance(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], names: Iterable[str],
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """``E[x xᵀ]`` (n, n) float32 of the inputs ``x`` of the modules ``names``, over non-padding tokens.

    Its top eigenvectors span the directions the skill's inputs use, including those in the null
    space of a wide weight (``down_proj``: n > r), which no singular component of ``W`` covers.
    """
    modules = {name: model.get_submodule(name) for name in names}
    sums: dict[str, torch.Tensor] = {}

    def visit(name: str, module: nn.Module, x: torch.Tensor) -> None:
        x = x.float()
        sums[name] = sums.get(name, 0) + x.T @ x  # (n, n)

    tokens = _for_each_input(model, modules, batches, visit, "covariance", progress)
    return {name: s / max(tokens, 1) for name, s in sums.items()}
