"""palora inside other training stacks; :mod:`palora.integrations.hf` for transformers' Trainer and TRL."""

from .hf import (
    SaveAdapterCallback,
    create_optimizer,
    optimizer_grouped_parameters,
    prepare_orthogonal_lora,
    prepare_svf,
    save_adapter,
)

__all__ = [
    "SaveAdapterCallback", "create_optimizer", "optimizer_grouped_parameters", "prepare_orthogonal_lora",
    "prepare_svf", "save_adapter",
]
