"""``palora-residual``: the paper's probe read in the residual basis, ``ΔW`` inside the singular
components outside ``S``.

``ΔW = (α/r) U_¬S U_¬Sᵀ B A V_¬S V_¬Sᵀ``: on top of ``palora``'s ``P_out B A P_in`` the update is
also kept off ``W``'s null spaces (:func:`palora.core.subspace.with_null_spaces`). For a wide
matrix (``down_proj``, n > r) that null space holds most of the skill's input energy
(docs/results.md), which ``P_in`` alone leaves open. Same probe file as ``palora``.

Cost: the null-space bases are stored explicitly, ``m·(m−r)`` or ``n·(n−r)`` floats per matrix
(SmolLM2: 1536 x 960; an 8B model's 14336 x 4096 matrices: 14336 x 10240, 0.6 GB each), from a
full SVD. Fine on small models; at 8B, projecting *onto* ``U_¬S``, ``V_¬S`` would be the cheaper form.
"""

from .base import Method, lora

METHOD = Method("palora-residual", "LoRA inside the singular components the probe leaves (U_notS, V_notS): "
                "off S and off the weight's null spaces", build=lora, protects="residual", side="both")
