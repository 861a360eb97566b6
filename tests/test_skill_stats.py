"""Skill statistics per singular component, and the probe scores built on them."""

from __future__ import annotations

import torch

from palora.core.probe import component_scores
from palora.core.statistics import activation_energy, fisher_information
from palora.core.svf import add_svf, svf_layers
from tiny import make_tiny_model


def _batch(seed: int = 0, pad: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -pad:] = 0  # right padding on the second row
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_activation_energy_is_the_mean_squared_projection_over_real_tokens():
    model = make_tiny_model("llama")
    add_svf(model, "linear", progress=False)
    name, layer = next(iter(svf_layers(model).items()))
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    batch = _batch()
    energy = activation_energy(model, [batch], progress=False)
    handle.remove()
    x = seen[0][batch["attention_mask"].bool()]  # (tokens, n): padding excluded
    expected = ((x @ layer.V) ** 2).mean(0)
    torch.testing.assert_close(energy[name], expected, rtol=1e-5, atol=1e-7)
    # the energies of all components sum to E‖x‖² (V is orthonormal, square here or tall)
    if layer.V.shape[0] == layer.V.shape[1]:
        torch.testing.assert_close(energy[name].sum(), (x**2).sum(1).mean(), rtol=1e-4, atol=1e-6)


def test_padding_tokens_do_not_count():
    model = make_tiny_model("llama")
    add_svf(model, "linear", progress=False)
    a = _batch(pad=3)
    b = {k: v.clone() for k, v in a.items()}
    b["input_ids"][1, -3:] = 5  # other ids under the padding mask
    ea, eb = activation_energy(model, [a], progress=False), activation_energy(model, [b], progress=False)
    for name in ea:
        torch.testing.assert_close(ea[name], eb[name])


def test_fisher_is_the_mean_squared_gradient_and_leaves_z_alone():
    model = make_tiny_model("gpt2")
    add_svf(model, "t2", progress=False)
    layers = svf_layers(model)
    before = {n: layer.z.detach().clone() for n, layer in layers.items()}
    batches = [_batch(0), _batch(1)]
    fisher = fisher_information(model, batches, progress=False)
    grads = []
    for b in batches:
        model.zero_grad()
        model(**b).loss.backward()
        grads.append({n: layer.z.grad.clone() for n, layer in layers.items()})
    for n, layer in layers.items():
        torch.testing.assert_close(fisher[n], (grads[0][n] ** 2 + grads[1][n] ** 2) / 2)
        assert torch.equal(layer.z, before[n])


def test_data_scores():
    s = torch.tensor([1.0, 1.5, 0.5])
    sigma = torch.tensor([3.0, 2.0, 1.0])
    e = torch.tensor([0.1, 0.2, 0.4])
    act = component_scores(s, sigma, "activation", e)
    torch.testing.assert_close(act, (sigma * s) ** 2 * e)
    torch.testing.assert_close(component_scores(s, sigma, "activation_delta", e), act * (s - 1).abs())
    torch.testing.assert_close(component_scores(s, sigma, "fisher", e), e)
    try:
        component_scores(s, sigma, "activation")
    except ValueError as err:
        assert "skill data" in str(err)
    else:  # pragma: no cover
        raise AssertionError("a data score without statistics must be refused")


def test_input_covariance_is_the_mean_outer_product_over_real_tokens():
    from palora.core.statistics import input_covariance
    from palora.core.targets import find_targets

    model = make_tiny_model("llama")
    name = find_targets(model)[2].name  # a down_proj: n > r, its null space is covered too
    seen = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    batch = _batch()
    cov = input_covariance(model, [batch], [name], progress=False)[name]
    handle.remove()
    x = seen[0][batch["attention_mask"].bool()]
    torch.testing.assert_close(cov, x.T @ x / x.shape[0], rtol=1e-5, atol=1e-6)
    assert cov.shape == (x.shape[1], x.shape[1])
