"""experiments/premise.py's interventions on a tiny SVF expert: resetting or keeping the scales on a
selection restores the expert after, and the random update kept off S has no component on S."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from palora.core.svf import add_svf, svf_layers
from tiny import make_tiny_model

_SPEC = importlib.util.spec_from_file_location("premise", Path(__file__).parents[1] / "experiments" / "premise.py")
premise = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(premise)


def expert():
    model = make_tiny_model("llama", seed=0)
    add_svf(model, "linear", progress=False)
    layers = svf_layers(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in layers.values():
            layer.z.copy_(1 + 0.3 * torch.randn(layer.z.shape, generator=g))
    return model, layers


def test_reset_and_keep_touch_exactly_the_selection_and_restore_it():
    _, layers = expert()
    z = {n: layer.z.detach().clone() for n, layer in layers.items()}
    on = {n: torch.tensor([0, 2]) for n in layers}
    for keep_on in (True, False):
        with premise.scales(layers, z, on, keep_on=keep_on):
            for n, layer in layers.items():
                inside = torch.zeros_like(layer.z, dtype=torch.bool)
                inside[on[n]] = True
                kept = inside if keep_on else ~inside
                assert torch.equal(layer.z[kept], z[n][kept])
                assert torch.all(layer.z[~kept] == 1)
        assert all(torch.equal(layer.z, z[n]) for n, layer in layers.items())


def test_the_noise_kept_off_s_has_no_component_on_s_and_the_asked_norm():
    _, layers = expert()
    layer = next(iter(layers.values()))
    off = torch.tensor([0, 1, 3])
    g = torch.Generator().manual_seed(0)
    dw = premise.random_update(layer, 2.5, rank=4, off=off, g=g)
    u, v = layer.U[:, off].float(), layer.V[:, off].float()
    assert abs(dw.norm().item() - 2.5) < 1e-4
    assert (u.T @ dw).norm() < 1e-5 * dw.norm() and (dw @ v).norm() < 1e-5 * dw.norm()
    free = premise.random_update(layer, 2.5, rank=4, off=None, g=torch.Generator().manual_seed(0))
    assert torch.linalg.matrix_rank(free) == 4 and (u.T @ free).norm() > 1e-2 * free.norm()


def test_the_added_update_is_x_times_its_transpose_and_is_removed_after():
    model, layers = expert()
    name, layer = next(iter(layers.items()))
    x = torch.randn(2, 3, layer.V.shape[0])
    before = layer(x)
    dw = torch.randn(layer.U.shape[0], layer.V.shape[0])
    with premise.added(layers, {name: dw}):
        torch.testing.assert_close(layer(x), before + x @ dw.T)
    torch.testing.assert_close(layer(x), before)
