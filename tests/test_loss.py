"""The training loss (palora.training.loss): logits at the labelled positions only, the model's own
loss and gradients, on padded and on padding-free batches, for every family that takes them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from torch import nn

from palora.io.data import TrainCollator
from palora.training.loss import keeps_logits, next_token_loss
from palora.training.packing import FlatCollator
from tiny import FAMILIES, make_tiny_model


def _items(shape: list[tuple[int, int]], seed: int = 0) -> list[dict[str, list[int]]]:
    """Sequences of the given lengths whose first ``p`` labels are masked (a prompt)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, p in shape:
        ids = torch.randint(3, 128, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * min(p, n) + ids[min(p, n):]})
    return out


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _assert_same(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    own = model(**batch, use_cache=False).loss
    ours, stats = next_token_loss(model, batch)
    assert stats == {}
    assert float(ours.detach()) == pytest.approx(float(own.detach()), rel=1e-5, abs=1e-6)
    for a, b in zip(_grads(model, ours), _grads(model, own), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 20), st.integers(0, 19)), min_size=1, max_size=5), st.booleans())
def test_the_loss_and_gradients_are_the_models_own(shape, flat):
    """Any lengths and prompt masks, padded or joined: the same mean over the same targets."""
    if all(p >= n - 1 for n, p in shape):  # no target at all: the model's nan, tested below
        shape = [*shape, (4, 1)]
    model = make_tiny_model("llama").train()
    items = _items(shape)
    _assert_same(model, (FlatCollator() if flat else TrainCollator(0))(items))


@pytest.mark.parametrize("family", [f for f in FAMILIES if keeps_logits(make_tiny_model(f))])
def test_every_family_that_keeps_logits_gets_its_own_loss(family):
    model = make_tiny_model(family)  # eval mode: no dropout, so two passes are the same computation
    _assert_same(model, TrainCollator(0)(_items([(9, 4), (5, 0), (12, 11)])))


def test_through_a_peft_model_the_head_sees_only_the_positions_with_a_target():
    model = get_peft_model(make_tiny_model("llama"), LoraConfig(r=4, target_modules=["gate_proj", "up_proj", "down_proj"]))
    assert keeps_logits(model)
    batch = TrainCollator(0)(_items([(10, 8), (6, 5)]))  # labels at positions 8, 9 and 5
    seen = []
    head = model.get_base_model().lm_head
    handle = head.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    try:
        _assert_same(model, batch)
    finally:
        handle.remove()
    # the model's own pass projects all 10 positions; ours the 3 that predict a label (7, 8 and 4)
    assert seen == [10, 3]


def test_no_target_gives_the_models_nan():
    model = make_tiny_model("llama")
    batch = TrainCollator(0)(_items([(5, 5), (3, 3)]))
    assert torch.isnan(next_token_loss(model, batch)[0])


def test_a_model_without_logits_to_keep_is_told_apart():
    class Plain(nn.Module):
        def forward(self, input_ids, labels=None):  # noqa: D401 - a stand-in without the keyword
            return input_ids

    assert not keeps_logits(Plain())
    assert keeps_logits(make_tiny_model("llama"))
