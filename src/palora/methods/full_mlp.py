"""``full-mlp``: every target matrix trained in full (no adapter), the upper bound on capacity.

All parameters are frozen but the target weights; the result is the trained model itself
(``palora compare``), with its own learning-rate grid (``full``).
"""

from .base import BuildContext, Built, Method


def build(ctx: BuildContext) -> Built:
    for p in ctx.model.parameters():
        p.requires_grad_(False)
    for t in ctx.targets:
        t.module.weight.requires_grad_(True)
    return Built(ctx.model)


METHOD = Method("full-mlp", "every target matrix trained in full", build=build, lr_family="full", for_expert=False)
