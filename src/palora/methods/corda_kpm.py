"""``corda-kpm``: peft's CorDA in knowledge-preserved mode, on the skill's input covariance.

peft hooks every target, accumulates the covariance ``C`` of its inputs over the skill data, and
decomposes ``W C``; the adapter starts on the components least used by those inputs and the base
weight keeps the rest (rewritten), so the skill's directions are left in the frozen part. The
result is the merged model (``palora compare``); its factors carry ``C⁻¹``, so it gets the wider
``svd-init`` learning-rate grid.
"""

from __future__ import annotations

from .base import BuildContext, Built, Method


def build(ctx: BuildContext) -> Built:
    import torch
    from peft import get_peft_model
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    from ..core.orthogonal import lora_config

    if ctx.skill_batches is None:
        raise ValueError("corda-kpm needs the skill data's batches")
    i = ctx.inject
    config = lora_config(ctx.targets, i.rank, i.alpha, i.dropout, init_lora_weights="corda",
                         corda_config=CordaConfig(corda_method="kpm"))
    batches = ctx.skill_batches()
    model = ctx.model
    device = next(model.parameters()).device

    @torch.no_grad()
    def run_model() -> None:
        # peft hooks the targets and accumulates each call's input covariance; its hook takes
        # one sequence per call (batch 1), so each sequence goes alone, without its padding
        for b in batches:
            for ids, mask in zip(b["input_ids"], b["attention_mask"]):
                model(input_ids=ids[mask.bool()][None].to(device))

    preprocess_corda(model, config, run_model=run_model)
    return Built(get_peft_model(model, config))


METHOD = Method("corda-kpm", "peft CorDA (knowledge-preserved): LoRA started on the components least used by the "
                "skill's inputs (base weights rewritten)", build=build, lr_family="svd-init", for_expert=False)
