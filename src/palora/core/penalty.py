"""An O-LoRA-style orthogonality penalty: the soft alternative to the projection (``olora-penalty``).

For every target with protected bases ``U_S`` (m x k) and ``V_S`` (n x k) and LoRA factors
``A`` (r x n), ``B`` (m x r), the training loss gets

    λ · Σ_targets ( ‖A V_S‖²_F + ‖U_Sᵀ B‖²_F ).

It is zero exactly when ``A P_in = A`` and ``P_out B = B`` (``P_in = I − V_S V_Sᵀ``,
``P_out = I − U_S U_Sᵀ``), i.e. when PALoRA's projection would be the identity; otherwise it only
pulls the update towards that, without the guarantee. O-LoRA (Wang et al., 2023) penalises the
overlap of a new adapter with earlier ones the same way; here the "earlier" space is the skill's.
"""

from __future__ import annotations

import torch
from peft import PeftModel

from .orthogonal import ADAPTER_NAME, lora_layer
from .subspace import Subspace


class SubspacePenalty:
    """``penalty()`` returns the term above for the current ``A``, ``B`` (a scalar with gradients)."""

    def __init__(self, peft_model: PeftModel, subspaces: dict[str, Subspace], weight: float):
        self.weight = weight
        self.terms = []
        for name, sub in subspaces.items():
            layer = lora_layer(peft_model, name)
            A, B = layer.lora_A[ADAPTER_NAME], layer.lora_B[ADAPTER_NAME]
            device = A.weight.device
            self.terms.append((A, B, sub.U.to(device), sub.V.to(device)))

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.terms[0][0].weight.device) if self.terms else torch.zeros(())
        for A, B, U, V in self.terms:
            a, b = A.weight.float(), B.weight.float()
            total = total + (a @ V).square().sum() + (U.T @ b).square().sum()
        return self.weight * total
