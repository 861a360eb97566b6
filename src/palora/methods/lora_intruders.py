"""``lora-intruders``: plain LoRA, then peft's ``reduce_intruder_dimension`` on the trained adapter.

Intruder dimensions (Shuttleworth et al., 2024, "LoRA vs Full Fine-tuning: An Illusion of
Equivalence"): among the top ``k`` left singular vectors of the updated weight
``W + ΔW = U' Σ' V'ᵀ``, those whose largest ``|cos|`` with the singular vectors of ``W`` is below
``ε``; they carry the forgetting. With ``I`` that set, peft (``tuners/lora/intruders.py``, its
defaults ``k = 10``, ``ε = 0.5``, ``λ = 0.75``) forms

    W_mit = W + ΔW − (1 − λ) · U'_I Σ'_I V'_Iᵀ

and refits the adapter to ``W_mit − W`` by its top-``r`` SVD (``√σ`` on each factor), so the result
is again a rank-``r`` LoRA for the expert; a layer without intruders keeps its adapter. Post hoc:
training is plain LoRA's, so it shares LoRA's learning rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Method, lora

if TYPE_CHECKING:
    from peft import PeftModel

#: the adapter peft writes the mitigated factors into, copied back into the trained one
REDUCED = "intruders_reduced"


def reduce_intruders(model: PeftModel) -> None:
    """peft's mitigation of the trained adapter, written back into it (the saved adapter is one plain LoRA)."""
    import torch
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    from ..core.orthogonal import ADAPTER_NAME, bake_projections

    bake_projections(model)  # with an earlier round's spaces: the projected factors are the trained adapter
    reduce_intruder_dimension(model, old_adapter_name=ADAPTER_NAME, new_adapter_name=REDUCED, logging_sink=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer) and REDUCED in module.lora_A:
                module.lora_A[ADAPTER_NAME].weight.copy_(module.lora_A[REDUCED].weight)
                module.lora_B[ADAPTER_NAME].weight.copy_(module.lora_B[REDUCED].weight)
    model.set_adapter(ADAPTER_NAME)
    model.delete_adapter(REDUCED)


METHOD = Method("lora-intruders", "plain LoRA, then its intruder dimensions reduced (peft's reduce_intruder_dimension)",
                build=lora, finish=reduce_intruders)
