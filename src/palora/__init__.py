"""palora: teach a model new facts with LoRA kept off what a skill relies on.

The pipeline's rooms: :mod:`palora.core` (the math: SVD, SVF layer, probe, projectors),
:mod:`palora.methods` (one file per method), :mod:`palora.protection` (what a method keeps its
update off), :mod:`palora.injection` (build → train → bake → certify), :mod:`palora.stages`
(svf, probe, inject, eval: the CLI's verbs), :mod:`palora.compare`, :mod:`palora.report`.

The method in five calls (components do no I/O)::

    layers = add_svf(model, "linear")                 # stage 1: W_z = U diag(σ ⊙ s(z)) Vᵀ, train z
    state = svf_state(model); merge_svf(model)        # the expert, as a stock model
    subspaces, stats = select_subspace(find_targets(base), state, "linear", "delta",
                                       SelectionRule("fraction", fraction=0.25))   # stage 2, on the base
    peft_model = add_orthogonal_lora(model, subspaces, rank=16)   # stage 3: ΔW = P_out B A P_in
    bake_projections(peft_model); peft_model.save_pretrained(dir)   # a plain peft LoRA adapter

The names below are imported on first use, so that ``import palora`` (and ``palora --help``)
does not load torch and peft.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "SVD": "core.linalg", "fingerprint": "core.linalg", "thin_svd": "core.linalg",
    "add_lora": "core.orthogonal", "add_orthogonal_lora": "core.orthogonal", "bake_projections": "core.orthogonal",
    "certificate": "core.orthogonal", "lora_delta": "core.orthogonal",
    "SelectionRule": "core.probe", "component_scores": "core.probe", "select": "core.probe",
    "select_subspace": "core.probe", "spectrum_stats": "core.probe",
    "Subspace": "core.subspace",
    "SVFLinear": "core.svf", "add_svf": "core.svf", "load_svf_state": "core.svf", "merge_svf": "core.svf",
    "svf_state": "core.svf",
    "find_targets": "core.targets",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), *__all__]
