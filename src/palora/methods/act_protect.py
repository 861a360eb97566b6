"""``act-protect``: LoRA kept off the skill's input-covariance directions (not singular components).

For a target ``W`` (m x n) and the skill's inputs ``x`` through the SVF expert, the covariance
``C = E[x xᵀ] = Q diag(λ) Qᵀ`` gives ``V_S = Q[:, S]`` with ``S`` the top eigenvectors chosen by
the probe's rule (``palora probe``, activation basis; :mod:`palora.core.covariance`). The update
is ``ΔW = (α/r) B A P_in``, ``P_in = I − V_S V_Sᵀ``: the skill's inputs, which lie mostly in
``span(V_S)``, barely move the output. It covers the null space of a wide ``down_proj``, which no
singular component does. The method docs/results.md recommends on SmolLM2.
"""

from .base import Method, lora

METHOD = Method("act-protect", "LoRA kept off the top eigenvectors of the skill's input covariance through the "
                "expert (B A P_in)", build=lora, protects="covariance", side="in")
