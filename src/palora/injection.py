"""The one injection path, build → train → bake → certify, for the inject stage, ``palora compare``
and the Hugging Face integration.

1. **build** (:func:`build`): torch seeded with the run's seed, then the method's own build on the
   start model (:mod:`palora.methods`), so every LoRA-based method starts from the same ``A``;
2. **train** (:func:`palora.training.loop.train`): the facts, ``inject.train``'s budget, the
   method's penalty if any; under FSDP2 the trained adapter is then copied into a whole rebuild;
3. **finish**: the method's post-training step, if it declares one;
4. **bake** (:func:`palora.core.orthogonal.bake_projections`): ``A' = A P_in`` and ``B' = P_out B``
   written into plain parameters, so the adapter is a plain peft LoRA adapter;
5. **certify** (:func:`certify`): for a projected update, per side the largest ratio over the
   target matrices, ``max ‖U_Sᵀ ΔW‖ / ‖ΔW‖`` and ``max ‖ΔW V_S‖ / ‖ΔW‖`` (rounding level on the
   sides the method protects), and ``‖ΔW‖`` over all targets; against an earlier round's update
   ``ΔW₁ = U₁ Σ V₁ᵀ`` the same with ``U₁`` and ``V₁``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from torch import nn

from .config import RunConfig
from .core.orthogonal import Side, bake_projections, certificate, lora_delta
from .core.subspace import Subspace
from .core.targets import Target, find_targets
from .core.update_spaces import UpdateSpaces, adapter_certificate
from .io.metrics_log import MetricsLog
from .methods.base import BuildContext, Built, Method
from .training.checkpoint import CheckpointSpec
from .training.distributed import world_size
from .training.loop import full_trainable_state, load_trained, train
from .training.packing import train_collator


def build(method: Method, model: nn.Module, cfg: RunConfig, subspaces: dict[str, Subspace] | None, side: Side,
          skill_batches: Callable[[], list[dict[str, torch.Tensor]]] | None = None) -> tuple[Built, list[Target]]:
    """The model to train for ``method`` on ``model`` (modified in place) and its targets; torch seeded here."""
    if method.build is None:
        raise ValueError(f"{method.name} trains nothing")
    targets = find_targets(model, cfg.model.target_modules)
    torch.manual_seed(cfg.seed)  # the same A initialisation for every LoRA-based method
    ctx = BuildContext(model, targets, cfg.inject, subspaces, side, method.soft or cfg.inject.soft, skill_batches)
    return method.build(ctx), targets


@dataclass
class Injected:
    model: nn.Module  # trained, projections baked: a PeftModel, or the start model itself (full-mlp)
    info: dict[str, Any]  # what stages.json / a comparison row records


def inject(
    method: Method,
    model: nn.Module,
    items: Sequence[dict[str, list[int]]],
    pad_token_id: int,
    cfg: RunConfig,
    subspaces: dict[str, Subspace] | None,
    side: Side,
    *,
    reload: Callable[[], nn.Module],
    stage: str,
    skill_batches: Callable[[], list[dict[str, torch.Tensor]]] | None = None,
    log: MetricsLog | None = None,
    progress: bool = True,
    checkpoint: CheckpointSpec | None = None,
    earlier: dict[str, UpdateSpaces] | None = None,
    trained_hook: Callable[[], None] | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> Injected:
    """Steps 1–5 of the module docstring on the start ``model``; ``reload`` gives a fresh copy of it
    (for the whole rebuild after FSDP2); ``trained_hook`` is called right after training (e.g. to
    read the training's peak memory); ``on_step(step, model)`` after every optimizer step, with the
    model being trained (projections not baked: :func:`~palora.core.orthogonal.projected_state_dict`
    reads its adapter as baked). Raises :class:`~palora.errors.PaloraError` when the loss diverges."""
    built, targets = build(method, model, cfg, subspaces, side, skill_batches)
    collator = train_collator(built.model, pad_token_id, cfg.data.padding_free)
    result = train(built.model, items, collator, cfg.inject.train, seed=cfg.seed, stage=stage,
                   log=log, progress=progress, regularizer=built.regularizer, checkpoint=checkpoint, on_step=on_step)
    if trained_hook is not None:
        trained_hook()
    trained = built.model
    if result.sharded:  # FSDP2 shards: the same model, rebuilt whole, with the trained adapter
        state = full_trainable_state(trained)
        rebuilt, targets = build(method, reload(), cfg, subspaces, side, skill_batches)
        trained = load_trained(rebuilt.model, state)
    if method.finish is not None:
        method.finish(trained)
    bake_projections(trained)
    info: dict[str, Any] = {"trainable_parameters": result.trainable_parameters, "final_loss": result.final_loss,
                            "train_time_s": round(result.wall_time_s, 2), "processes": world_size(),
                            "sharded": result.sharded}
    if built.projected:
        info.update(certify(trained, targets, subspaces))
    if earlier is not None:
        ratios = [adapter_certificate(lora_delta(trained, t.name), earlier[t.name]) for t in targets if t.name in earlier]
        info["adapter_certificate_out"] = max(r[0] for r in ratios)  # max ‖U₁ᵀ ΔW₂‖ / ‖ΔW₂‖
        info["adapter_certificate_in"] = max(r[1] for r in ratios)  # max ‖ΔW₂ V₁‖ / ‖ΔW₂‖
    return Injected(trained, info)


def certify(model: PeftModel, targets: list[Target], subspaces: dict[str, Subspace]) -> dict[str, float]:
    """``certificate_out`` = max ``‖U_Sᵀ ΔW‖/‖ΔW‖``, ``certificate_in`` = max ``‖ΔW V_S‖/‖ΔW‖`` over the
    targets (both measured, whichever sides the method protects), and ``update_norm`` = ``‖ΔW‖_F``
    over all targets together; one ``ΔW`` (m x n, float32) at a time."""
    out = inn = squares = 0.0
    for t in targets:
        delta = lora_delta(model, t.name)
        ratio_out, ratio_in = certificate(delta, subspaces[t.name])
        out, inn, squares = max(out, ratio_out), max(inn, ratio_in), squares + float(delta.square().sum())
        del delta
    return {"certificate_out": out, "certificate_in": inn, "update_norm": squares ** 0.5}


def certified(info: dict[str, Any], side: Side) -> float:
    """The certificate of the sides ``side`` protects: the largest of ``certificate_out`` (out, both)
    and ``certificate_in`` (in, both) that :func:`certify` recorded."""
    return max(info["certificate_out"] if side in ("both", "out") else 0.0,
               info["certificate_in"] if side in ("both", "in") else 0.0)


def merged(model: nn.Module) -> nn.Module:
    """The plain model to evaluate: LoRA merged into the (possibly rewritten) base weights."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model
