"""``lora``: plain peft LoRA on the expert, ``ΔW = (α/r) B A`` (``A`` Kaiming-uniform, ``B = 0``).

The baseline every method is measured against: same targets, rank, steps, batch and seed.
"""

from .base import Method, lora

METHOD = Method("lora", "plain peft LoRA, ΔW = (α/r) B A", build=lora)
