"""Build one compared method on an expert: the model to train and the penalty, if any.

Every LoRA-based method goes through peft (:func:`palora.orthogonal.lora_config`), seeded the
same way, so plain LoRA, PALoRA and the ablations start from the same ``A``. PiSSA and CorDA
(knowledge-preserved mode, covariance of the skill data) are peft's own initialisations; both,
like MiLoRA, rewrite the base weights to ``W − c·B₀A₀``: the model to evaluate is the merged one
(:func:`merged`), never the adapter on the untouched expert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import PeftModel, get_peft_model
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import preprocess_corda
from torch import nn

from ..config import RunConfig
from ..orthogonal import Side, add_lora, lora_config
from ..subspace import Subspace
from ..targets import Target
from .milora import milora_init
from .penalty import SubspacePenalty
from .registry import MethodSpec


@dataclass
class Built:
    model: nn.Module  # a PeftModel, or the expert itself for full-mlp
    regularizer: Callable[[], torch.Tensor] | None = None


def build_method(
    spec: MethodSpec,
    expert: nn.Module,
    targets: list[Target],
    cfg: RunConfig,
    subspaces: dict[str, Subspace] | None = None,
    skill_batches: Callable[[], list[dict[str, torch.Tensor]]] | None = None,
    side: Side | None = None,
) -> Built:
    """``expert`` is modified in place (wrapped, or its base weights rewritten); seed set here.

    ``side`` overrides the projection side (default: the method's own, else ``inject.side``).
    """
    inj = cfg.inject
    torch.manual_seed(cfg.seed)  # the same A initialisation for every LoRA-based method
    if spec.init == "full":
        for p in expert.parameters():
            p.requires_grad_(False)
        for t in targets:
            t.module.weight.requires_grad_(True)
        return Built(expert)
    if spec.init == "pissa":
        return Built(get_peft_model(expert, lora_config(targets, inj.rank, inj.alpha, inj.dropout,
                                                         init_lora_weights="pissa")))
    if spec.init == "corda-kpm":
        if skill_batches is None:
            raise ValueError("corda-kpm needs the skill data's batches")
        config = lora_config(targets, inj.rank, inj.alpha, inj.dropout, init_lora_weights="corda",
                             corda_config=CordaConfig(corda_method="kpm"))
        batches = skill_batches()
        device = next(expert.parameters()).device

        @torch.no_grad()
        def run_model() -> None:
            # peft hooks the targets and accumulates each call's input covariance; its hook takes
            # one sequence per call (batch 1), so each sequence goes alone, without its padding
            for b in batches:
                for ids, mask in zip(b["input_ids"], b["attention_mask"]):
                    expert(input_ids=ids[mask.bool()][None].to(device))

        preprocess_corda(expert, config, run_model=run_model)
        return Built(get_peft_model(expert, config))
    if spec.init not in ("lora", "milora"):
        raise ValueError(f"{spec.name} trains nothing")
    projected = subspaces is not None and not spec.penalty  # also plain lora, off an earlier adapter
    if spec.protect != "none" and subspaces is None:
        raise ValueError(f"{spec.name} needs protected subspaces")
    model = add_lora(expert, targets, inj.rank, inj.alpha, inj.dropout,
                     subspaces=subspaces if projected else None, side=side or spec.side or inj.side,
                     soft=spec.soft or inj.soft)
    if spec.init == "milora":
        milora_init(model, targets)
    if spec.penalty:
        return Built(model, SubspacePenalty(model, subspaces, inj.penalty_weight))
    return Built(model)


def merged(model: nn.Module) -> nn.Module:
    """The plain model to evaluate: LoRA merged into the (possibly rewritten) base weights."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model
