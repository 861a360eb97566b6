"""``mica``: peft's Minor Component Adaptation (MiCA, arXiv 2604.01694), LoRA on the minor directions.

peft sets ``B`` (m x r) to the left singular vectors of ``W_z`` with the ``r`` smallest singular
values, ``A = 0``, and freezes ``B``: only ``A`` trains, so ``ΔW = (α/r) U_minor A`` writes only
into the column space the expert uses least. The base weights are untouched, so the result is a
plain peft adapter for the expert (``init_lora_weights="mica"`` in its config: peft ≥ 0.21 loads it).
"""

from .base import BuildContext, Built, Method, lora


def build(ctx: BuildContext) -> Built:
    return lora(ctx, init_lora_weights="mica")


METHOD = Method("mica", "peft MiCA: B frozen on the r minor left singular vectors of W_z, only A trains",
                build=build)
