"""Padding-free batches (palora.training.packing): the padded batch's loss and gradients, fewer positions;
a model that mixes joined sequences is detected and trained on padded batches instead."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model

from palora.config import TrainConfig
from palora.io.data import TrainCollator
from palora.training.loop import train
from palora.training.packing import FlatCollator, honours_packing, train_collator
from tiny import FAMILIES, make_tiny_model, tiny_train_items


def _items(lengths: list[int], prompts: list[int], seed: int = 0) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, p in zip(lengths, prompts, strict=True):
        ids = torch.randint(3, 128, (n,), generator=g).tolist()
        p = min(p, n - 1)  # at least one labelled token
        out.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return out


def _loss_and_grads(model, batch) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 24), st.integers(0, 12)), min_size=1, max_size=6))
def test_flat_batch_has_the_padded_batch_loss_and_gradients(shape):
    """Any mix of lengths and prompt masks: the same mean over the same labelled tokens, the same gradient."""
    model = make_tiny_model("llama").train()
    items = _items([n for n, _ in shape], [p for _, p in shape])
    padded, padded_grads = _loss_and_grads(model, TrainCollator(0)(items))
    flat_batch = FlatCollator()(items)
    assert flat_batch["input_ids"].shape == (1, sum(n for n, _ in shape))
    flat, flat_grads = _loss_and_grads(model, flat_batch)
    assert flat == pytest.approx(padded, rel=1e-5, abs=1e-6)
    for a, b in zip(flat_grads, padded_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_packing_is_detected_per_architecture():
    """Llama keeps joined sequences apart; OPT (learned positions, its own mask) does not."""
    assert honours_packing(make_tiny_model("llama"))
    assert not honours_packing(make_tiny_model("opt"))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_on_a_collator_it_honours(family):
    """Whatever the family, the chosen collator gives the padded batch's loss (eval mode: no dropout)."""
    model = make_tiny_model(family)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        collator = train_collator(model, 0, padding_free=True)
    fell_back = [w for w in caught if issubclass(w.category, UserWarning) and "right-padded" in str(w.message)]
    assert len(fell_back) == (0 if honours_packing(model) else 1)  # a warning exactly when it pads
    items = _items([5, 11, 3], [2, 4, 0])
    assert _loss_and_grads(model, collator(items))[0] == pytest.approx(
        _loss_and_grads(model, TrainCollator(0)(items))[0], rel=1e-5)


def test_padding_free_off_pads():
    assert isinstance(train_collator(make_tiny_model("llama"), 0, padding_free=False), TrainCollator)
    assert isinstance(train_collator(make_tiny_model("llama"), 0, padding_free=True), FlatCollator)


def test_training_run_follows_the_padded_run():
    """The loop on a LoRA model: the same loss at every step, padded or joined (rounding apart)."""
    cfg = TrainConfig(steps=6, batch_size=4, lr=5e-3, log_every=1, checkpoint_every=0)
    items = tiny_train_items(12, length=10) + _items([3, 17, 6, 22], [1, 5, 0, 9], seed=1)
    curves = []
    for collator in (TrainCollator(0), FlatCollator()):
        model = get_peft_model(make_tiny_model("llama"), LoraConfig(r=4, target_modules=["gate_proj", "down_proj"]))
        torch.manual_seed(0)
        curves.append(train(model, items, collator, cfg, seed=0, stage="test", progress=False).losses)
    assert curves[1] == pytest.approx(curves[0], rel=1e-4)

