"""``olora-penalty``: the probe's components kept off by a penalty instead of a projection.

The loss gets ``λ · Σ_targets (‖A V_S‖²_F + ‖U_Sᵀ B‖²_F)`` (:class:`palora.core.penalty.SubspacePenalty`,
``λ = inject.penalty_weight``): zero exactly where the projection would be the identity, otherwise
only a pull towards it, without the guarantee (O-LoRA, Wang et al., 2023, penalises the overlap
with earlier adapters the same way).
"""

from __future__ import annotations

import dataclasses

from .base import BuildContext, Built, Method, lora


def build(ctx: BuildContext) -> Built:
    """Plain LoRA (no projection) with the penalty over ``ctx.subspaces``: nothing to certify."""
    from ..core.penalty import SubspacePenalty

    if ctx.subspaces is None:
        raise ValueError("olora-penalty needs protected subspaces")
    model = lora(dataclasses.replace(ctx, subspaces=None)).model  # no projection: the penalty instead
    return Built(model, regularizer=SubspacePenalty(model, ctx.subspaces, ctx.inject.penalty_weight))


METHOD = Method("olora-penalty", "LoRA + inject.penalty_weight * (|A V_S|^2 + |U_S^T B|^2) on the probe's "
                "components (soft, no guarantee)", build=build, protects="spectral", side="both",
                reads=("penalty_weight",))
