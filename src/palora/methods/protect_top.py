"""``protect-top``: an ablation of the probe, the ``k`` principal components of each matrix.

Per matrix ``S = {0, …, k−1}`` (largest σ) with ``k`` the probe's own count for that matrix, so
that it protects exactly as many components as ``palora``: only *which* differs. Both sides.
"""

from .base import Method, lora

METHOD = Method("protect-top", "ablation: LoRA kept off the top-k singular components (k per matrix as the probe)",
                build=lora, protects="top", side="both")
