"""SVF invariants on every tiny family: z at its initial value is the identity, merged equals
unmerged, only z learns, t2 preserves the sum of singular values, the state round-trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from invariants import IDS, logits, rel_err
from palora.core.linalg import thin_svd
from palora.core.svf import (
    SVFLinear,
    add_svf,
    effective_scale,
    load_svf_state,
    merge_svf,
    svf_flops,
    svf_layers,
    svf_path,
    svf_state,
)
from palora.core.targets import find_targets, weight_matrix
from palora.errors import ArtifactError
from tiny import FAMILIES, make_tiny_model

PARAMS = ("linear", "t2")


def perturb(layers: dict[str, SVFLinear], seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            layer.z.add_(0.3 * torch.randn(layer.z.shape, generator=g))


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_initial_z_is_identity(family, parametrization):
    model = make_tiny_model(family)
    base = logits(model)
    layers = add_svf(model, parametrization, progress=False)
    assert layers and all(isinstance(m, SVFLinear) for m in svf_layers(model).values())
    for layer in layers.values():
        torch.testing.assert_close(layer.scale(), torch.ones_like(layer.z), rtol=0, atol=1e-6)
    assert rel_err(logits(model), base) < 1e-5


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_merge_equals_unmerged_and_restores_stock_modules(family, parametrization):
    model = make_tiny_model(family)
    keys = list(model.state_dict())
    classes = {t.name: type(t.module) for t in find_targets(model)}
    layers = add_svf(model, parametrization, progress=False)
    perturb(layers)
    expected_W = {name: layer.merged_weight() for name, layer in layers.items()}
    unmerged = logits(model)

    merge_svf(model)
    assert rel_err(logits(model), unmerged) < 1e-5
    assert not svf_layers(model)
    for name, cls in classes.items():
        module = model.get_submodule(name)
        assert type(module) is cls and cls in (nn.Linear, Conv1D)
        torch.testing.assert_close(weight_matrix(module), expected_W[name], rtol=0, atol=0)
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_merged_weight_is_U_diag_sigma_s_Vt(family, parametrization):
    model = make_tiny_model(family)
    W0 = {t.name: weight_matrix(t.module).detach().clone() for t in find_targets(model)}
    layers = add_svf(model, parametrization, progress=False)
    perturb(layers, seed=1)
    for name, layer in layers.items():
        U, S, V = layer.U.float(), layer.sigma, layer.V.float()
        m, n = W0[name].shape
        r = min(m, n)
        assert U.shape == (m, r) and V.shape == (n, r) and S.shape == (r,)
        s = effective_scale(layer.z, S, parametrization)
        torch.testing.assert_close(layer.merged_weight(), U @ torch.diag(S * s) @ V.T, rtol=1e-5, atol=1e-6)
        # the factors are those of the base weight
        torch.testing.assert_close(U @ torch.diag(S) @ V.T, W0[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_only_z(family, parametrization):
    model = make_tiny_model(family)
    layers = add_svf(model, parametrization, progress=False)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    zs = {id(layer.z) for layer in layers.values()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == len(layers) and all(n.endswith(".z") for n in trainable)
    for name, p in model.named_parameters():
        if id(p) in zs:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert all(p in layer.no_decay_parameters() for layer in layers.values() for p in [layer.z])


def test_t2_preserves_sum_of_singular_values():
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(64, generator=g).sort(descending=True).values + 0.01
    for z in (torch.full((64,), 0.1), torch.full((64,), -3.0), torch.randn(64, generator=g) * 2):
        s = effective_scale(z, sigma, "t2")
        assert torch.isclose((sigma * s).sum(), sigma.sum(), rtol=1e-6)
        assert (s > 0).all()
    torch.testing.assert_close(effective_scale(torch.full((64,), 5.0), sigma, "t2"), torch.ones(64))
    z = torch.randn(64, generator=g)
    assert torch.equal(effective_scale(z, sigma, "linear"), z)
    with pytest.raises(ValueError):
        effective_scale(z, sigma, "cubic")


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_t2_layers_keep_sum_after_perturbation(family):
    model = make_tiny_model(family)
    layers = add_svf(model, "t2", progress=False)
    perturb(layers, seed=2)
    for layer in layers.values():
        assert torch.isclose((layer.sigma * layer.scale()).sum(), layer.sigma.sum(), rtol=1e-5)


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_svf_state_round_trip(family, parametrization):
    a = make_tiny_model(family)
    layers = add_svf(a, parametrization, progress=False)
    perturb(layers, seed=3)
    state = svf_state(a)
    assert set(state) == {f"{n}.{k}" for n in layers for k in ("z", "sigma")}
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in state.values())

    b = make_tiny_model(family)
    add_svf(b, parametrization, progress=False)
    load_svf_state(b, state)
    for name, layer in svf_layers(b).items():
        assert torch.equal(layer.z, state[f"{name}.z"])
    assert torch.equal(logits(a), logits(b))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_load_svf_state_refuses_mismatched_names(family):
    a = make_tiny_model(family)
    add_svf(a, "linear", progress=False)
    state = svf_state(a)
    b = make_tiny_model(family)
    add_svf(b, "linear", progress=False)

    first = next(iter(svf_layers(a)))
    renamed = {k.replace(first, first + "_x", 1) if k.startswith(first + ".") else k: v for k, v in state.items()}
    with pytest.raises(ArtifactError, match="does not match"):
        load_svf_state(b, renamed)
    missing = {k: v for k, v in state.items() if not k.startswith(first + ".")}
    with pytest.raises(ArtifactError, match="missing"):
        load_svf_state(b, missing)
    wrong_shape = dict(state, **{f"{first}.z": torch.ones(3)})
    with pytest.raises(ArtifactError, match="shape"):
        load_svf_state(b, wrong_shape)


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("shape", [(12, 7), (7, 12)])
def test_factored_and_recomposed_paths_agree(shape, parametrization):
    """Both forms of the forward give the same y, ∂z and ∂x (float64, so only rounding differs)."""
    m, n = shape
    g = torch.Generator().manual_seed(4)
    base = nn.Linear(n, m, bias=True).double()
    with torch.no_grad():
        base.weight.copy_(torch.randn(m, n, generator=g, dtype=torch.float64))
    layer = SVFLinear(base, thin_svd(base.weight), parametrization)
    assert layer.U.dtype == layer.V.dtype == torch.float64 and layer.sigma.dtype == torch.float32
    with torch.no_grad():
        layer.z.add_(0.3 * torch.randn(layer.z.shape, generator=g))
    x = torch.randn(3, 5, n, generator=g, dtype=torch.float64)
    results = {}
    for path in ("factored", "recomposed"):
        layer.path = path
        xi = x.clone().requires_grad_(True)
        layer.z.grad = None
        y = layer(xi)
        (y * torch.linspace(-1, 1, m, dtype=torch.float64)).sum().backward()
        results[path] = (y.detach(), layer.z.grad.clone(), xi.grad.clone())
    for a, b in zip(results["factored"], results["recomposed"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # both equal the merged weight applied densely
    expected = x @ layer.merged_weight().double().T + base.bias.detach()
    torch.testing.assert_close(results["factored"][0], expected, rtol=1e-6, atol=1e-6)


def test_path_follows_the_flop_count():
    """Inference on many tokens recomposes; training (∂x and ∂z) stays factored at every T."""
    m, n, r = 14336, 4096, 4096  # a Llama-3.1-8B MLP matrix
    assert svf_path(8192, m, n, r, grad_z=False, grad_x=False) == "factored"
    assert svf_path(14337, m, n, r, grad_z=False, grad_x=False) == "recomposed"
    assert svf_path(14336, m, n, r, grad_z=False, grad_x=False) == "factored"  # the tie
    for tokens in (1, 8192, 10**7):
        assert svf_path(tokens, m, n, r, grad_z=True, grad_x=True) == "factored"
    factored, recomposed = svf_flops(8192, m, n, r, grad_z=True, grad_x=True)
    assert factored == 4 * 8192 * r * (m + n) and recomposed == 4 * m * n * r + 6 * 8192 * m * n
    # a 12 x 3 layer (r = 3): no grad, 2·T·3·15 > 2·36·3 + 2·T·36 from T = 13;
    # training, 4·T·3·15 < 4·36·3 + 6·T·36 always
    layer = SVFLinear(nn.Linear(3, 12), thin_svd(torch.randn(12, 3)), "linear")
    many = torch.randn(1000, 3)
    with torch.no_grad():
        assert layer.choose_path(many) == "recomposed"
        assert layer.choose_path(many[:12]) == "factored"
    assert layer.choose_path(many.requires_grad_(True)) == "factored"
    layer.path = "recomposed"
    assert layer.choose_path(many) == "recomposed"
