"""palora inside other tools: :mod:`.hf` for transformers' Trainer and TRL, :mod:`.lm_eval` for
lm-evaluation-harness. The Trainer helpers are importable from here too (loaded on first use)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SaveAdapterCallback", "create_optimizer", "optimizer_grouped_parameters", "prepare_orthogonal_lora",
    "prepare_svf", "save_adapter",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".hf", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
