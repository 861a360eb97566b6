"""Each compared method on a tiny Llama changes only what it should (palora.methods)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from invariants import logits, rel_err
from palora.config import RunConfig
from palora.core.linalg import iter_svd
from palora.core.orthogonal import ADAPTER_NAME, add_lora, bake_projections, lora_delta, lora_layer
from palora.core.penalty import SubspacePenalty
from palora.core.probe import same_budget_indices, singular_subspaces
from palora.core.subspace import Subspace
from palora.core.targets import find_targets, weight_matrix
from palora.injection import build, merged
from palora.io.data import TrainCollator
from palora.methods.milora import milora_init
from palora.methods.registry import METHODS
from palora.training.loop import train
from tiny import make_tiny_model, tiny_train_items

RANK = 4


def config(**compare) -> RunConfig:
    cfg = RunConfig()
    inject = dataclasses.replace(cfg.inject, rank=RANK, alpha=8.0,
                                 train=dataclasses.replace(cfg.inject.train, steps=3, batch_size=4, lr=1e-2))
    return dataclasses.replace(cfg, inject=inject, compare=dataclasses.replace(cfg.compare, **compare))


def subspaces_of(model, k: int = 8, how: str = "random") -> dict[str, Subspace]:
    targets = find_targets(model)
    ranks = {t.name: min(t.shape) for t in targets}
    return singular_subspaces(targets, same_budget_indices({n: k for n in ranks}, ranks, how, seed=0))


def skill_batches() -> list[dict[str, torch.Tensor]]:
    collate = TrainCollator(0)
    return [collate(tiny_train_items(4, seed=s)) for s in range(2)]


def build_method(method, model, cfg, subs, batches=skill_batches):
    """The method's build through the one injection path (its side, else inject.side)."""
    return build(method, model, cfg, subs, method.side or cfg.inject.side, batches)[0]


def trained(name: str, with_subspaces: bool = True):
    """(expert, merged model after 3 steps, the subspaces, the built model)."""
    expert = make_tiny_model("llama")
    model = copy.deepcopy(expert)
    subs = subspaces_of(model) if METHODS[name].protects is not None and with_subspaces else None
    built = build_method(METHODS[name], model, config(), subs, skill_batches)
    train(built.model, tiny_train_items(16), TrainCollator(0), config().inject.train, seed=0, stage=name,
          progress=False, regularizer=built.regularizer)
    bake_projections(built.model)
    return expert, merged(built.model), subs, built


@pytest.mark.parametrize("name", [m for m in METHODS if METHODS[m].trains])
def test_only_the_target_matrices_change(name):
    expert, after, _, _ = trained(name)
    targets = {f"{t.name}.weight" for t in find_targets(expert)}
    before = dict(expert.named_parameters())
    changed = {n for n, p in after.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= targets, sorted(changed - targets)[:3]


@pytest.mark.parametrize("name", ["palora", "protect-top", "protect-random", "palora-in", "act-protect"])
def test_projected_updates_stay_off_the_protected_inputs(name):
    expert = make_tiny_model("llama")
    model = copy.deepcopy(expert)
    subs = subspaces_of(model)
    built = build_method(METHODS[name], model, config(), subs, skill_batches)
    train(built.model, tiny_train_items(16), TrainCollator(0), config().inject.train, seed=0, stage=name,
          progress=False)
    for t in find_targets(expert):
        delta = lora_delta(built.model, t.name)
        assert float(delta.norm()) > 0
        assert float((delta @ subs[t.name].V).norm() / delta.norm()) < 1e-5


@pytest.mark.parametrize("name", ["pissa", "corda-kpm", "milora"])
def test_rewritten_base_plus_initial_adapter_is_the_expert(name):
    """PiSSA, CorDA and MiLoRA move r components from W into the adapter: before training the
    merged model is the expert (the adapter alone on the untouched expert would not be)."""
    expert = make_tiny_model("llama")
    model = copy.deepcopy(expert)
    built = build_method(METHODS[name], model, config(), None, skill_batches)
    rewritten = [lora_layer(built.model, t.name).get_base_layer().weight.detach() for t in find_targets(expert)]
    originals = [weight_matrix(t.module) for t in find_targets(expert)]
    assert all(rel_err(w, o) > 1e-3 for w, o in zip(rewritten, originals))
    assert rel_err(logits(merged(built.model)), logits(expert)) < 1e-4


def test_milora_adapter_is_the_minor_components():
    model = make_tiny_model("llama")
    targets = find_targets(model)
    W = {t.name: weight_matrix(t.module).clone() for t in targets}
    peft_model = add_lora(model, targets, RANK, 8.0)
    milora_init(peft_model, targets)
    for t in targets:
        layer = lora_layer(peft_model, t.name)
        c = layer.scaling[ADAPTER_NAME]
        U, S, Vh = torch.linalg.svd(W[t.name], full_matrices=False)
        minor = U[:, -RANK:] @ torch.diag(S[-RANK:]) @ Vh[-RANK:]
        assert rel_err(lora_delta(peft_model, t.name), minor) < 1e-4
        assert rel_err(layer.get_base_layer().weight + c * layer.lora_B[ADAPTER_NAME].weight
                       @ layer.lora_A[ADAPTER_NAME].weight, W[t.name]) < 1e-5
        # the residual keeps the principal components: its top singular values are W's
        S_res = torch.linalg.svdvals(layer.get_base_layer().weight)
        assert torch.allclose(S_res[: S.numel() - RANK], S[:-RANK], rtol=1e-4, atol=1e-5)


def test_penalty_is_zero_exactly_when_the_projection_is_the_identity():
    model = make_tiny_model("llama")
    targets = find_targets(model)
    subs = subspaces_of(model)
    peft_model = add_lora(model, targets, RANK, 8.0)
    penalty = SubspacePenalty(peft_model, subs, weight=0.5)
    assert float(penalty().detach()) > 0  # B = 0 at init, but the random A overlaps V_S
    with torch.no_grad():
        for t in targets:
            lora_layer(peft_model, t.name).lora_B[ADAPTER_NAME].weight.normal_()
    # project A and B off the subspace: the projection is then the identity on them, the penalty 0
    with torch.no_grad():
        for t in targets:
            layer = lora_layer(peft_model, t.name)
            A, B, s = layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight, subs[t.name]
            A -= (A @ s.V) @ s.V.T
            B -= s.U @ (s.U.T @ B)
    assert float(penalty().detach()) < 1e-10
    # nothing protected: no penalty at all
    empty = {n: Subspace(torch.zeros(0, dtype=torch.long), s.U[:, :0], s.V[:, :0]) for n, s in subs.items()}
    assert float(SubspacePenalty(peft_model, empty, weight=0.5)().detach()) == 0.0


def test_penalty_gradient_is_the_projection_residual():
    """∂/∂A λ‖A V_S‖² = 2λ A V_S V_Sᵀ: the penalty pulls A exactly towards A P_in."""
    model = make_tiny_model("llama")
    targets = find_targets(model)
    subs = subspaces_of(model)
    peft_model = add_lora(model, targets, RANK, 8.0)
    SubspacePenalty(peft_model, subs, weight=0.5)().backward()
    t = targets[0]
    A = lora_layer(peft_model, t.name).lora_A[ADAPTER_NAME].weight
    V = subs[t.name].V
    assert rel_err(A.grad, 2 * 0.5 * (A.detach() @ V) @ V.T) < 1e-5


def test_same_budget_indices():
    ranks = {"a": 10, "b": 6}
    top = same_budget_indices({"a": 3, "b": 9}, ranks, "top", seed=0)
    assert top["a"].tolist() == [0, 1, 2] and top["b"].tolist() == list(range(6))  # capped at the rank
    r1 = same_budget_indices({"a": 4, "b": 2}, ranks, "random", seed=1)
    r2 = same_budget_indices({"a": 4, "b": 2}, ranks, "random", seed=1)
    assert all(torch.equal(r1[n], r2[n]) for n in ranks)
    assert r1["a"].numel() == 4 and len(set(r1["a"].tolist())) == 4 and r1["a"].tolist() == sorted(r1["a"].tolist())
    assert any(not torch.equal(r1[n], same_budget_indices({"a": 4, "b": 2}, ranks, "random", seed=2)[n]) for n in ranks)


def test_singular_subspaces_match_the_svd():
    model = make_tiny_model("llama")
    targets = find_targets(model)
    idx = {t.name: torch.tensor([0, 5, 9]) for t in targets}
    subs = singular_subspaces(targets, idx)
    for t, svd in iter_svd(targets):
        assert torch.equal(subs[t.name].U, svd.U[:, [0, 5, 9]].float())
        assert torch.equal(subs[t.name].V, svd.V[:, [0, 5, 9]].float())


def test_full_mlp_trains_every_target_weight_and_nothing_else():
    model = make_tiny_model("llama")
    built = build_method(METHODS["full-mlp"], model, config(), None, None)
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    assert trainable == {f"{t.name}.weight" for t in find_targets(model)}


def off_span(X: torch.Tensor, Q: torch.Tensor) -> float:
    """``‖(I − Q Qᵀ) X‖ / ‖X‖``: how much of ``X``'s columns lies outside ``span(Q)`` (orthonormal ``Q``)."""
    return rel_err(Q @ (Q.T @ X), X)


def test_mica_trains_only_a_on_the_minor_left_singular_vectors():
    """peft's MiCA (``init_lora_weights="mica"``): ``B`` is the ``r`` minor left singular vectors of ``W``,
    frozen, ``A = 0``; the model starts as the expert and every update writes into ``span(B)`` alone."""
    expert = make_tiny_model("llama")
    model = copy.deepcopy(expert)
    built = build_method(METHODS["mica"], model, config(), None)
    assert rel_err(logits(built.model), logits(expert)) < 1e-6
    minors = {}
    for t in find_targets(expert):
        layer = lora_layer(built.model, t.name)
        A, B = layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight
        assert not B.requires_grad and A.requires_grad and float(A.detach().abs().max()) == 0.0
        minors[t.name] = torch.linalg.svd(weight_matrix(t.module).detach().float(), full_matrices=False)[0][:, -RANK:]
        assert off_span(B.detach(), minors[t.name]) < 1e-5
    frozen = {t.name: lora_layer(built.model, t.name).lora_B[ADAPTER_NAME].weight.detach().clone()
              for t in find_targets(expert)}
    train(built.model, tiny_train_items(16), TrainCollator(0), config().inject.train, seed=0, stage="mica",
          progress=False)
    for name, minor in minors.items():
        assert torch.equal(lora_layer(built.model, name).lora_B[ADAPTER_NAME].weight, frozen[name])
        delta = lora_delta(built.model, name)
        assert float(delta.norm()) > 0 and off_span(delta, minor) < 1e-5


def test_lora_intruders_is_the_documented_mitigation_and_one_plain_adapter():
    """``lora-intruders``' finish (peft's ``reduce_intruder_dimension``, its defaults k = 10, ε = 0.5,
    λ = 0.75): with ``W + ΔW = U' Σ' V'ᵀ`` and ``I`` the top-k directions whose largest |cos| with ``W``'s
    left singular vectors is below ε, the adapter becomes the rank-r truncation of
    ``ΔW − (1 − λ) U'_I Σ'_I V'_Iᵀ``; an update without intruders is kept; one adapter remains."""
    expert = make_tiny_model("llama")
    built = build_method(METHODS["lora-intruders"], copy.deepcopy(expert), config(), None)
    targets = find_targets(expert)
    large, small = targets[0].name, targets[1].name
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a large random update (it intrudes) and a tiny one (it does not)
        for t in targets:
            B = lora_layer(built.model, t.name).lora_B[ADAPTER_NAME].weight
            B.copy_((10.0 if t.name == large else 1e-4) * torch.randn(B.shape, generator=g))
    before = {t.name: lora_delta(built.model, t.name) for t in targets}
    METHODS["lora-intruders"].finish(built.model)
    assert list(built.model.peft_config) == [ADAPTER_NAME]
    W = {t.name: weight_matrix(t.module).detach().float() for t in targets}
    U_base = torch.linalg.svd(W[large], full_matrices=False)[0]
    U, S, Vh = torch.linalg.svd(W[large] + before[large], full_matrices=False)
    intruders = torch.where((U.T @ U_base).abs().max(dim=1).values[:10] < 0.5)[0]
    assert intruders.numel() > 0
    mitigated = before[large] - 0.25 * (U[:, intruders] * S[intruders]) @ Vh[intruders]
    u, s, vh = torch.linalg.svd(mitigated, full_matrices=False)
    assert rel_err(lora_delta(built.model, large), (u[:, :RANK] * s[:RANK]) @ vh[:RANK]) < 1e-4
    assert float(lora_delta(built.model, large).norm()) < float(before[large].norm())
    assert torch.allclose(lora_delta(built.model, small), before[small])


class _Probes:
    """The singular probe of a tiny expert (random components), as :class:`palora.protection.Probes`."""

    def __init__(self, model):
        self.model, self.subs = model, subspaces_of(model)

    def get(self, basis: str) -> dict[str, Subspace]:
        assert basis == "singular"
        return self.subs

    def base_targets(self):
        return find_targets(self.model)


def test_residual_updates_stay_inside_the_singular_components_outside_s():
    from palora.protection import skill_subspaces

    expert = make_tiny_model("llama")
    model = copy.deepcopy(expert)
    probes = _Probes(model)
    subs = skill_subspaces(METHODS["palora-residual"], probes, seed=0)
    for t in find_targets(model):  # the probe's components, then the null spaces (one side each)
        m, n = t.shape
        k = probes.subs[t.name].k
        assert subs[t.name].U.shape == (m, k + m - min(m, n)) and subs[t.name].V.shape == (n, k + n - min(m, n))
        assert torch.equal(subs[t.name].U[:, :k], probes.subs[t.name].U)
    assert any(t.shape[0] != t.shape[1] for t in find_targets(model))  # a null space to close
    built = build_method(METHODS["palora-residual"], model, config(), subs, skill_batches)
    train(built.model, tiny_train_items(16), TrainCollator(0), config().inject.train, seed=0, stage="residual",
          progress=False)
    for t, svd in iter_svd(find_targets(expert)):
        delta = lora_delta(built.model, t.name)
        rest = torch.tensor([i for i in range(svd.S.numel()) if i not in set(probes.subs[t.name].indices.tolist())])
        U, V = svd.U[:, rest].float(), svd.V[:, rest].float()
        assert float(delta.norm()) > 0
        # ΔW = U_¬S U_¬Sᵀ ΔW V_¬S V_¬Sᵀ: inside the residual basis, hence off S and off both null spaces
        assert rel_err(U @ (U.T @ delta @ V) @ V.T, delta) < 1e-4


def test_with_null_spaces_completes_the_weight_basis():
    from palora.core.subspace import with_null_spaces

    W = torch.randn(12, 5)
    for M in (W, W.T):
        svd = next(iter_svd([_Target(M)]))[1]
        sub = Subspace.from_svd(svd, torch.tensor([1, 3]))
        full = with_null_spaces(sub, M)
        m, n = M.shape
        # [U_S | N_out | U_¬S] and [V_S | N_in | V_¬S] are orthonormal bases of R^m and R^n
        for Q, Q_all, d in ((full.U, svd.U, m), (full.V, svd.V, n)):
            rest = Q_all[:, [0, 2, 4]].float()
            basis = torch.cat([Q, rest], 1)
            assert basis.shape == (d, d)
            torch.testing.assert_close(basis.T @ basis, torch.eye(d), atol=1e-5, rtol=0)


class _Target:
    """A bare weight as a target, for :func:`iter_svd`."""

    def __init__(self, W: torch.Tensor):
        self.name, self.module = "w", torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
        with torch.no_grad():
            self.module.weight.copy_(W)
