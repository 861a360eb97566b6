"""``palora-soft``: the paper's probe with a soft projector on both sides.

``P = I − V_S diag(w) V_Sᵀ`` (and the same with ``U_S``), ``w_i = a_i / max_S a ∈ [0, 1]`` from
the probe's scores: the most skill-relevant components are removed fully, the others in part.
"""

from .base import Method, lora

METHOD = Method("palora-soft", "the paper's probe, soft projector I - V_S diag(w) V_S^T on both sides",
                build=lora, protects="spectral", side="both", soft=True)
