"""MiLoRA (Wang et al., 2024): LoRA initialised on the *minor* singular components of each weight.

For a target ``W = U diag(σ) Vᵀ`` (m x n) and rank ``r``, let ``U_m, σ_m, V_m`` be its last
``r`` singular triplets (the smallest σ) and ``c = α / r`` the LoRA scaling. MiLoRA sets

    A = diag(√(σ_m / c)) V_mᵀ   (r x n),    B = U_m diag(√(σ_m / c))   (m x r),
    W_res = W − c · B A = W − U_m diag(σ_m) V_mᵀ,

so at initialisation ``W_res + c · B A = W`` (the model is unchanged) and the adapter trains the
minor components, leaving the principal ones (where pre-trained knowledge concentrates) in
``W_res``. PiSSA is the same with the first ``r`` triplets (peft's ``init_lora_weights="pissa"``).
Not in peft; written here against that definition (tests/test_methods.py checks it).
"""

from __future__ import annotations

import torch
from peft import PeftModel

from ..orthogonal import ADAPTER_NAME, lora_layer
from ..targets import Target


@torch.no_grad()
def milora_init(peft_model: PeftModel, targets: list[Target]) -> None:
    """Rewrite each target's ``A``, ``B`` and base weight in place as in the module docstring."""
    for t in targets:
        layer = lora_layer(peft_model, t.name)
        A, B = layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight
        base = layer.get_base_layer().weight
        W = (base.T if t.transposed else base).float()  # (m, n) = (out, in)
        r, c = A.shape[0], layer.scaling[ADAPTER_NAME]
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        root = (S[-r:] / c).sqrt()
        A.copy_((root[:, None] * Vh[-r:]).to(A.dtype))
        B.copy_((U[:, -r:] * root[None, :]).to(B.dtype))
        residual = W - c * (B.float() @ A.float())
        base.copy_((residual.T if t.transposed else residual).to(base.dtype))
