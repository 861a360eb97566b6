"""Which weight matrices the method adapts, and how to read them as ``W`` (out x in).

Targets are matched on whole module-path components, never on substrings: the default for a
family is a tuple of path suffixes (``("mlp", "c_fc")`` matches ``transformer.h.0.mlp.c_fc``
and not ``transformer.h.0.attn.c_proj``); a user override names the last component, as peft's
``target_modules`` does. A ``model_type`` not in :data:`DEFAULT_TARGETS` is recognised by its
module structure when the suffixes of known families pick one set of matrices; otherwise it is
refused, naming ``model.target_modules`` and the model's own linear layers.

GPT-2's ``Conv1D`` stores its weight transposed, ``(in, out)``; :func:`weight_matrix` and
:func:`set_weight_matrix` hide that, so the rest of the library always sees ``W`` as out x in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import ModelError

_LLAMA_MLP = (("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))

#: ``config.model_type`` -> the path suffixes of its MLP matrices.
DEFAULT_TARGETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "llama": _LLAMA_MLP,
    "mistral": _LLAMA_MLP,
    "qwen2": _LLAMA_MLP,
    "qwen3": _LLAMA_MLP,
    "gemma": _LLAMA_MLP,
    "gemma2": _LLAMA_MLP,
    "gemma3_text": _LLAMA_MLP,
    "gpt2": (("mlp", "c_fc"), ("mlp", "c_proj")),
    "gpt_neox": (("mlp", "dense_h_to_4h"), ("mlp", "dense_4h_to_h")),
    "opt": (("fc1",), ("fc2",)),
    "phi": (("mlp", "fc1"), ("mlp", "fc2")),
}

ADAPTABLE_TYPES = (nn.Linear, Conv1D)


@dataclass(frozen=True)
class Target:
    """One adapted matrix: its module path, the module, and whether its weight is stored (in, out)."""

    name: str
    module: nn.Module

    @property
    def transposed(self) -> bool:
        return isinstance(self.module, Conv1D)

    @property
    def shape(self) -> tuple[int, int]:
        """``(out, in)`` = ``(m, n)``."""
        w = self.module.weight
        return (w.shape[1], w.shape[0]) if self.transposed else (w.shape[0], w.shape[1])


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as ``W`` (out x in), a view (no copy)."""
    w = module.weight
    return w.t() if isinstance(module, Conv1D) else w


def set_weight_matrix(module: nn.Module, W: torch.Tensor) -> None:
    """Write ``W`` (out x in) into the module in its own orientation and dtype."""
    w = module.weight
    src = W.t() if isinstance(module, Conv1D) else W
    with torch.no_grad():
        w.copy_(src.to(dtype=w.dtype, device=w.device))


def _matches(name: str, patterns: tuple[tuple[str, ...], ...]) -> bool:
    parts = tuple(name.split("."))
    return any(len(p) <= len(parts) and parts[-len(p):] == p for p in patterns)


def _linear_names(model: nn.Module) -> list[str]:
    """The distinct last path components of the model's adaptable layers, in module order."""
    names = [n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, ADAPTABLE_TYPES)]
    return [n for n in dict.fromkeys(names) if n != "lm_head"]


def _suffix_patterns(model: nn.Module, target_modules: list[str] | None) -> tuple[tuple[str, ...], ...]:
    if target_modules:
        return tuple(tuple(t.split(".")) for t in target_modules)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    # an unknown family: the known families whose every MLP suffix occurs, if they pick one set of modules
    names = [n for n, m in model.named_modules() if isinstance(m, ADAPTABLE_TYPES)]
    picks = {}
    for patterns in dict.fromkeys(DEFAULT_TARGETS.values()):
        if all(any(_matches(n, (p,)) for n in names) for p in patterns):
            picks.setdefault(tuple(n for n in names if _matches(n, patterns)), patterns)
    if len(picks) == 1:
        return next(iter(picks.values()))
    known = ", ".join("/".join(p[-1] for p in patterns) for patterns in dict.fromkeys(DEFAULT_TARGETS.values()))
    raise ModelError(
        f"{type(model).__name__} (model_type {model_type!r}, not a family palora knows) has "
        f"{'the MLP names of several' if picks else 'the MLP names of no'} known family ({known}): pass "
        f"model.target_modules (its linear layers: --set model.target_modules=[{','.join(_linear_names(model)[:4])}])"
    )


def find_targets(model: nn.Module, target_modules: list[str] | None = None) -> list[Target]:
    """The adapted matrices of ``model`` in module order.

    ``target_modules``: names of the last path components (``["gate_proj", "down_proj"]``) or
    dotted suffixes (``["mlp.c_proj"]``); default: the MLP matrices of the model's family.
    """
    patterns = _suffix_patterns(model, target_modules)
    found: list[Target] = []
    for name, module in model.named_modules():
        if _matches(name, patterns):
            if not isinstance(module, ADAPTABLE_TYPES):
                raise ModelError(
                    f"target module {name} is a {type(module).__name__}; only nn.Linear and Conv1D are supported"
                )
            found.append(Target(name, module))
    if not found:
        wanted = ", ".join(".".join(p) for p in patterns)
        raise ModelError(
            f"no target modules matching [{wanted}] in {type(model).__name__}; pass model.target_modules "
            f"(its linear layers: --set model.target_modules=[{','.join(_linear_names(model)[:4])}])"
        )
    return found


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` of ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
