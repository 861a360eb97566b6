"""Padding-free training batches: a batch's sequences joined into one row, attention kept within each.

A right-padded batch of ``B`` sequences costs ``B · max_b T_b`` token positions; joined, it costs
``Σ_b T_b``. The two differ most when lines of very different lengths share a batch: with replay,
general-text lines (about 50 tokens) beside fact lines (about 18) make padded batches about three
times as long as their tokens.

The joined batch is transformers' :class:`~transformers.DataCollatorWithFlattening`: ``input_ids``
and ``labels`` of shape ``(1, Σ T_b)``, ``position_ids`` restarting at 0 with every sequence, and
each sequence's first label set to ``-100``. Models built on transformers' ``masking_utils`` read the
restarts of ``position_ids`` (when no attention mask and no cache are given) as a block-diagonal
causal mask, so every token attends to its own sequence only. The loss is then the mean
cross-entropy over exactly the labelled tokens of the padded batch (the first label of a sequence is
never a target: the shift predicts token ``t + 1`` from ``t``), and the gradients are the padded
batch's up to float rounding.

Not every architecture honours the restarts (OPT and BLOOM do not, in transformers 5.24):
:func:`honours_packing` runs the model once on two short sequences, joined and apart, and
:func:`train_collator` falls back to padding, with a warning, when the two disagree.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DataCollatorWithFlattening

from ..io.data import TrainCollator

#: collates tokenised ``{"input_ids", "labels"}`` examples into a batch the model takes as keywords
Collator = Callable[[Sequence[dict[str, list[int]]]], dict[str, torch.Tensor]]

#: the largest logit difference, joined against apart, that still counts as the same computation
TOLERANCE = 1e-3


@dataclass(frozen=True)
class FlatCollator:
    """``(1, Σ T_b)`` batches: ``input_ids``, ``labels`` and restarting ``position_ids``, no padding."""

    flatten: DataCollatorWithFlattening = field(default_factory=lambda: DataCollatorWithFlattening(return_tensors="pt"))

    def __call__(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return self.flatten(list(items))  # reads input_ids and labels; other keys are ignored


def honours_packing(model: nn.Module) -> bool:
    """Whether ``model`` gives two joined sequences the logits it gives each alone (eval mode, no grad)."""
    vocab = model.get_input_embeddings().num_embeddings
    seqs = [[(7 * i + 3) % vocab for i in range(5)], [(11 * i + 5) % vocab for i in range(7)]]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            joined = FlatCollator()([{"input_ids": s, "labels": s} for s in seqs])
            flat = model(input_ids=joined["input_ids"].to(device), position_ids=joined["position_ids"].to(device),
                         use_cache=False).logits[0]
            apart = torch.cat([model(input_ids=torch.tensor([s], device=device), use_cache=False).logits[0]
                               for s in seqs])
    finally:
        model.train(was_training)
    return bool((flat.float() - apart.float()).abs().max() <= TOLERANCE * max(1.0, float(apart.abs().max())))


def train_collator(model: nn.Module, pad_token_id: int, padding_free: bool) -> Collator:
    """:class:`FlatCollator` when ``padding_free`` and the model honours it, else right padding."""
    if padding_free and honours_packing(model):
        return FlatCollator()
    if padding_free:
        warnings.warn(f"{type(model).__name__} does not keep joined sequences apart (its attention ignores the "
                      "restarts of position_ids): training on right-padded batches instead (data.padding_free=false "
                      "silences this)", stacklevel=2)
    return TrainCollator(pad_token_id)
