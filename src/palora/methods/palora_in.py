"""``palora-in``: the paper's probe, the projection on the input side only, ``ΔW = (α/r) B A P_in``.

``ΔW v_i = 0`` for every protected ``v_i``; the output side is left free.
"""

from .base import Method, lora

METHOD = Method("palora-in", "the paper's probe, input side only: B A P_in", build=lora, protects="spectral",
                side="in")
