"""``protect-random``: an ablation of the probe, ``k`` random components of each matrix.

Per matrix ``k`` indices drawn uniformly without replacement (seeded by the run's seed), ``k``
the probe's own count, so that it protects exactly as many components as ``palora``. Both sides.
"""

from .base import Method, lora

METHOD = Method("protect-random", "ablation: LoRA kept off k random singular components (k per matrix as the probe)",
                build=lora, protects="random", side="both")
