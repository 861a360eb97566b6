"""Small shared helpers of the invariant tests (a helper, not a test file)."""

from __future__ import annotations

import torch

# Two rows, the second right-padded; ids below every tiny vocabulary (128 and 300).
IDS = torch.tensor([[1, 5, 17, 42, 99, 3, 64, 11], [1, 8, 8, 120, 7, 23, 0, 0]])
MASK = (torch.arange(IDS.shape[1]) < torch.tensor([[8], [6]])).long()


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    """Float32 logits (B, T, V) of ``model`` on ``ids`` in eval mode."""
    model.eval()
    mask = MASK if ids is IDS else torch.ones_like(ids)
    return model(input_ids=ids, attention_mask=mask).logits.float()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` (Frobenius)."""
    a, b = a.detach().float(), b.detach().float()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))


def stage_digest(cfg, key: str) -> str:
    """The digest the engine records for the stage ``key`` under ``cfg``."""
    from palora.stages.engine import digest
    from palora.stages.opening import stage_of

    return digest(cfg, stage_of(key))
