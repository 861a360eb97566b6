"""``palora-out``: the paper's probe, the projection on the output side only, ``ΔW = (α/r) P_out B A``.

``u_iᵀ ΔW = 0`` for every protected ``u_i``; the input side is left free.
"""

from .base import Method, lora

METHOD = Method("palora-out", "the paper's probe, output side only: P_out B A", build=lora, protects="spectral",
                side="out")
