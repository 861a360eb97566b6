"""``milora`` (Wang et al., 2024): LoRA initialised on the *minor* singular components of each weight.

For a target ``W = U diag(σ) Vᵀ`` (m x n) and rank ``r``, let ``U_m, σ_m, V_m`` be its last
``r`` singular triplets (the smallest σ) and ``c = α / r`` the LoRA scaling. MiLoRA sets

    A = diag(√(σ_m / c)) V_mᵀ   (r x n),    B = U_m diag(√(σ_m / c))   (m x r),
    W_res = W − c · B A = W − U_m diag(σ_m) V_mᵀ,

so at initialisation ``W_res + c · B A = W`` (the model is unchanged) and the adapter trains the
minor components, leaving the principal ones (where pre-trained knowledge concentrates) in
``W_res``. PiSSA is the same with the first ``r`` triplets (peft's ``init_lora_weights="pissa"``).
Not in peft; written here against that definition (tests/test_methods.py checks it). The base
weights are rewritten, so the result is the merged model, compared by ``palora compare`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import BuildContext, Built, Method, lora

if TYPE_CHECKING:
    from peft import PeftModel

    from ..core.targets import Target


def milora_init(peft_model: PeftModel, targets: list[Target]) -> None:
    """Rewrite each target's ``A``, ``B`` and base weight in place as in the module docstring."""
    import torch

    from ..core.orthogonal import ADAPTER_NAME, lora_layer

    with torch.no_grad():
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


def build(ctx: BuildContext) -> Built:
    built = lora(ctx)
    milora_init(built.model, ctx.targets)
    return built


METHOD = Method("milora", "MiLoRA: LoRA started on the bottom-r singular components of W_z (base weights "
                "rewritten)", build=build, for_expert=False)
