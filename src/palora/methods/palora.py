"""``palora``: the paper's method (arXiv 2605.24549), LoRA orthogonal to the skill's singular components.

The SVF expert's probe (``palora probe``: ``probe.score``, ``probe.rule``) picks per matrix the
protected index set ``S``; the update is ``ΔW = (α/r) P_out B A P_in`` with ``P_in = I − V_S V_Sᵀ``
and ``P_out = I − U_S U_Sᵀ`` applied on ``A`` and ``B`` in every forward pass
(:mod:`palora.core.orthogonal`), on ``inject.side``. With both sides every protected triplet
``(u_i, σ_i s_i, v_i)`` of ``W_z`` stays a singular triplet of ``W_z + ΔW``, exactly.
"""

from .base import Method, lora

METHOD = Method("palora", "LoRA kept off the singular components the SVF expert's probe picks "
                "(P_out B A P_in, inject.side)", build=lora, protects="spectral", paper=True)
