"""The training loss: next-token cross-entropy, with logits computed only where a label follows.

A causal LM's loss over a batch with labels ``y`` (``−100``: not a target) is

    L = (1 / |T|) Σ_{(b, t) ∈ T} −log softmax(h_{b,t} Eᵀ)[y_{b,t+1}],   T = {(b, t) : y_{b,t+1} ≠ −100}

(transformers' ``ForCausalLMLoss``: labels shifted left by one, mean over the targets). The output
projection ``E`` (V x d; V = 49,152, d = 576 on SmolLM2, a fifth of its parameters) and the
log-softmax over V are paid at every position of the forward pass, yet only the positions of
``T`` enter ``L``: none of a masked prompt's, none of a packed batch's last tokens.

:func:`next_token_loss` asks the model for the logits at ``K = {t : (b, t) ∈ T for some b}`` only
(transformers' ``logits_to_keep`` as a 1-D tensor of positions; with padding-free batches ``B = 1``
and ``K`` is exactly ``T``) and takes the mean of the same terms, so ``L`` and its gradients are
the model's own up to float rounding (tests/test_loss.py). On the SVF stage's skill lines, whose
prompts are masked, most positions leave ``K`` (bench/demo_speed.py measures the step). A model
whose ``forward`` takes no ``logits_to_keep`` gets its own loss, ``model(**batch).loss``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn

IGNORE = -100


def keeps_logits(model: nn.Module) -> bool:
    """Whether the causal LM inside ``model`` (a peft model's base, or the model) takes ``logits_to_keep``."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return "logits_to_keep" in inspect.signature(type(base).forward).parameters


def next_token_loss(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """``L`` of the module docstring on a collated batch (``labels`` (B, T) among its keys); no stats.

    ``model`` may be a wrapper (DDP, a peft model) of a model for which :func:`keeps_logits` holds.
    """
    labels = batch["labels"]
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # (B, T): the label that position t predicts
    keep = (target != IGNORE).any(0).nonzero().squeeze(1)  # (K,) positions with a target in some row
    if keep.numel() == 0:  # no target at all: the model's own loss (nan, as transformers gives)
        return model(**batch, use_cache=False).loss, {}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
    loss = F.cross_entropy(logits.float().flatten(0, 1), target[:, keep].flatten(), ignore_index=IGNORE)
    return loss, {}
