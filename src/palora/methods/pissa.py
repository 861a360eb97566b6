"""``pissa``: peft's PiSSA initialisation, LoRA started on the top-r singular components of ``W_z``.

``B A`` starts as ``U_r diag(σ_r) V_rᵀ`` (split as ``√σ`` on both factors) and the base weight
becomes ``W − c·B₀A₀``, so the model starts unchanged but the adapter trains the principal
components. The base weights are rewritten: the result is the merged model (``palora compare``).
Its initial factors are large (σ-scaled), so it gets the wider ``svd-init`` learning-rate grid.
"""

from .base import BuildContext, Built, Method, lora


def build(ctx: BuildContext) -> Built:
    return lora(ctx, init_lora_weights="pissa")


METHOD = Method("pissa", "peft PiSSA: LoRA started on the top-r singular components of W_z (base weights "
                "rewritten)", build=build, lr_family="svd-init", for_expert=False)
