"""Orthogonal LoRA invariants on every tiny family (GPT-2's Conv1D included): the certificate,
one-sided and soft variants, surviving singular triplets, bake / merge / export equivalences."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from peft import PeftModel
from torch.nn.utils import parametrize
from transformers import AutoModelForCausalLM

from invariants import logits, rel_err
from palora.config import TrainConfig
from palora.core.linalg import SVD, thin_svd
from palora.core.orthogonal import ProjectAway, add_lora, bake_projections, certificate, lora_delta, lora_layer
from palora.core.subspace import Subspace
from palora.core.svf import add_svf, merge_svf
from palora.core.targets import Target, find_targets, weight_matrix
from palora.io.data import TrainCollator
from palora.training.loop import train
from tiny import FAMILIES, make_tiny_model

RANK = 8
TINY = 1e-5  # rounding level in float32
LARGE = 1e-2  # clearly not orthogonal


@dataclass
class Built:
    model: PeftModel
    targets: list[Target]
    subspaces: dict[str, Subspace]
    svds: dict[str, SVD]  # of the base weights
    scales: dict[str, torch.Tensor]  # the expert's s, so that W_z = U diag(σ s) Vᵀ


def spread_indices(r: int) -> torch.Tensor:
    """Every third component: spread over the whole spectrum, top and bottom included."""
    return torch.arange(0, r, 3)


def raw(module: torch.nn.Module) -> torch.nn.Parameter:
    """The trainable tensor behind ``module.weight`` (before any projection)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


@torch.no_grad()
def randomize_lora(model: PeftModel, targets: list[Target]) -> None:
    """Random A and B, the same for a given target whatever the projection."""
    for i, t in enumerate(targets):
        layer = lora_layer(model, t.name)
        g = torch.Generator().manual_seed(1000 + i)
        for m in (layer.lora_A["default"], layer.lora_B["default"]):
            p = raw(m)
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


def build(family: str, side="both", soft=False, weights: float | None = None, protect=True, save_dir=None,
          random_lora=True) -> Built:
    """SVF expert of a tiny model (random scales, merged), protected subspaces from the base SVD,
    then (orthogonal) LoRA with random A and B."""
    model = make_tiny_model(family)
    svds = {t.name: thin_svd(weight_matrix(t.module)) for t in find_targets(model)}
    layers = add_svf(model, "linear", progress=False)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in layers.values():
            layer.z.add_(0.1 * torch.randn(layer.z.shape, generator=g))
    scales = {n: layer.scale().detach().clone() for n, layer in layers.items()}
    merge_svf(model)
    if save_dir is not None:
        model.save_pretrained(save_dir)
    subspaces = {}
    for name, svd in svds.items():
        idx = spread_indices(svd.S.numel())
        w = None if weights is None else torch.full((idx.numel(),), float(weights))
        subspaces[name] = Subspace.from_svd(svd, idx, w)
    targets = find_targets(model)
    torch.manual_seed(0)
    peft_model = add_lora(model, targets, RANK, alpha=2.0 * RANK, subspaces=subspaces if protect else None,
                          side=side, soft=soft)
    if random_lora:
        randomize_lora(peft_model, targets)
    return Built(peft_model, targets, subspaces, svds, scales)


# ----------------------------------------------------------------------------- certificates


@pytest.mark.parametrize("family", FAMILIES)
def test_certificate_both_sides(family):
    b = build(family, "both")
    assert any(t.transposed for t in b.targets) == (family == "gpt2")
    for t in b.targets:
        delta = lora_delta(b.model, t.name)
        assert delta.shape == t.shape
        assert torch.linalg.matrix_norm(delta) > 1e-3
        out_ratio, in_ratio = certificate(delta, b.subspaces[t.name])
        assert out_ratio < TINY and in_ratio < TINY, (t.name, out_ratio, in_ratio)


@pytest.mark.parametrize("family", FAMILIES)
def test_certificate_one_side(family):
    only_in = build(family, "in")
    only_out = build(family, "out")
    for t in only_in.targets:
        out_ratio, in_ratio = certificate(lora_delta(only_in.model, t.name), only_in.subspaces[t.name])
        assert in_ratio < TINY and out_ratio > LARGE, (t.name, out_ratio, in_ratio)
        out_ratio, in_ratio = certificate(lora_delta(only_out.model, t.name), only_out.subspaces[t.name])
        assert out_ratio < TINY and in_ratio > LARGE, (t.name, out_ratio, in_ratio)


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_lora_is_not_orthogonal(family):
    b = build(family, protect=False)
    for t in b.targets:
        out_ratio, in_ratio = certificate(lora_delta(b.model, t.name), b.subspaces[t.name])
        assert out_ratio > LARGE and in_ratio > LARGE


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_soft_projector_limits(family):
    hard = build(family, "both")
    soft_one = build(family, "both", soft=True, weights=1.0)
    soft_zero = build(family, "both", soft=True, weights=0.0)
    soft_half = build(family, "both", soft=True, weights=0.5)
    plain = build(family, protect=False)
    for t in hard.targets:
        d_hard = lora_delta(hard.model, t.name)
        torch.testing.assert_close(lora_delta(soft_one.model, t.name), d_hard, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(lora_delta(soft_zero.model, t.name), lora_delta(plain.model, t.name),
                                   rtol=0, atol=0)
        # in between: the protected components are damped, not removed
        ratio = certificate(lora_delta(soft_half.model, t.name), hard.subspaces[t.name])
        ratio_plain = certificate(lora_delta(plain.model, t.name), hard.subspaces[t.name])
        assert TINY < ratio[0] < ratio_plain[0] and TINY < ratio[1] < ratio_plain[1]


# ----------------------------------------------------------------------------- the guarantee


@pytest.mark.parametrize("family", FAMILIES)
def test_protected_triplets_survive(family):
    b = build(family, "both")
    bake_projections(b.model)
    merged = b.model.merge_and_unload()
    for t in b.targets:
        W = weight_matrix(merged.get_submodule(t.name)).detach().float()  # W_z + ΔW
        svd, s = b.svds[t.name], b.scales[t.name]
        norm = torch.linalg.matrix_norm(W, ord=2)
        S = set(b.subspaces[t.name].indices.tolist())

        def errors(i: int, svd=svd, s=s, W=W, norm=norm) -> tuple[float, float]:  # this iteration's values
            u, v, value = svd.U[:, i], svd.V[:, i], svd.S[i] * s[i]
            right = torch.linalg.vector_norm(W @ v - value * u) / norm
            left = torch.linalg.vector_norm(u @ W - value * v) / norm
            return float(right), float(left)

        for i in S:
            right, left = errors(i)
            assert right < TINY and left < TINY, (t.name, i, right, left)
        unprotected = [i for i in range(svd.S.numel()) if i not in S]
        assert max(max(errors(i)) for i in unprotected) > 1e-3


# ----------------------------------------------------------------------------- bake / merge / export


@pytest.mark.parametrize("family", FAMILIES)
def test_bake_merge_and_export(family, tmp_path):
    base_dir, adapter_dir = tmp_path / "expert", tmp_path / "adapter"
    b = build(family, "both", save_dir=base_dir)
    before = logits(b.model)

    bake_projections(b.model)
    assert not any(parametrize.is_parametrized(m) for m in b.model.modules())
    assert not any("parametrizations" in k for k in b.model.state_dict())
    for t in b.targets:
        layer = lora_layer(b.model, t.name)
        assert isinstance(layer.lora_A["default"].weight, torch.nn.Parameter)
        assert isinstance(layer.lora_B["default"].weight, torch.nn.Parameter)
        out_ratio, in_ratio = certificate(lora_delta(b.model, t.name), b.subspaces[t.name])
        assert out_ratio < TINY and in_ratio < TINY
    baked = logits(b.model)
    assert rel_err(baked, before) < 1e-6

    b.model.save_pretrained(adapter_dir)
    assert (adapter_dir / "adapter_config.json").is_file()
    assert (adapter_dir / "adapter_model.safetensors").is_file()

    merged = b.model.merge_and_unload()
    merged_logits = logits(merged)
    assert rel_err(merged_logits, baked) < 1e-5

    fresh = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(fresh, str(adapter_dir))
    assert rel_err(logits(loaded), merged_logits) < 1e-5


# ----------------------------------------------------------------------------- training keeps it


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_certificate_holds_after_optimizer_step(family):
    b = build(family, "both", random_lora=False)  # peft's init: random A, B = 0
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        ids = [1] + torch.randint(3, 100, (10,), generator=g).tolist()
        items.append({"input_ids": ids, "labels": ids})
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup_ratio=0.0, max_grad_norm=0.0)
    train(b.model, items, TrainCollator(0), cfg, seed=0, stage="test", progress=False)
    for t in b.targets:
        delta = lora_delta(b.model, t.name)
        assert torch.linalg.matrix_norm(delta) > 1e-4  # training moved B away from 0
        out_ratio, in_ratio = certificate(delta, b.subspaces[t.name])
        assert out_ratio < TINY and in_ratio < TINY, (t.name, out_ratio, in_ratio)
        # the raw parameters are free to point anywhere: the projection sits in the forward pass
        A_raw = raw(lora_layer(b.model, t.name).lora_A["default"]).detach()
        V_S = b.subspaces[t.name].V
        assert torch.linalg.matrix_norm(A_raw @ V_S) > 1e-3


def test_projections_computed_once_per_micro_batch():
    """The training loop's ``parametrize.cached()``: one projection of A and of B per target and
    micro-batch (forward and backward together), never per token; the loop's count is the same."""
    b = build("llama", "both", random_lora=False)
    calls = {"n": 0}

    def count(*_):
        calls["n"] += 1

    projectors = [m for m in b.model.modules() if isinstance(m, ProjectAway)]
    assert len(projectors) == 2 * len(b.targets)
    for p in projectors:
        p.register_forward_hook(count)
    ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with parametrize.cached():
        b.model(input_ids=ids, labels=ids).loss.backward()
    assert calls["n"] == len(projectors)

    calls["n"] = 0
    items = [{"input_ids": row.tolist(), "labels": row.tolist()} for row in ids]
    cfg = TrainConfig(steps=3, batch_size=1, grad_accum=2, lr=1e-3, warmup_ratio=0.0)
    train(b.model, items, TrainCollator(0), cfg, seed=0, stage="test", progress=False)
    assert calls["n"] == 3 * 2 * len(projectors)
