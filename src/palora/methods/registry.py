"""Every injection method ``palora compare`` runs, described by what it changes.

All methods start from the same SVF expert ``W_z`` and inject the same facts with the same rank,
steps and batch; they differ in the initialisation of the adapter, in what it may touch, and in
what is trained:

==================  ===========  ===============  =====================================================
method              init         protected set    update
==================  ===========  ===============  =====================================================
``svf``             (none)       (none)           nothing: the expert alone (skill ceiling, recall floor)
``lora``            peft LoRA    (none)           ``ΔW = (α/r) B A``
``pissa``           peft PiSSA   (none)           ``B, A`` start on the top-r components of ``W_z``
``corda-kpm``       peft CorDA   (none)           starts on the components least used by the skill data
``milora``          ours         (none)           ``B, A`` start on the bottom-r components of ``W_z``
``olora-penalty``   peft LoRA    probe            LoRA + ``λ(‖A V_S‖² + ‖U_Sᵀ B‖²)`` (soft, no guarantee)
``palora``          peft LoRA    probe            ``(α/r) P_out B A P_in`` (``inject.side``)
``palora-in/out``   peft LoRA    probe            one side only: ``B A P_in`` / ``P_out B A``
``palora-soft``     peft LoRA    probe            both sides, ``P = I − V_S diag(w) V_Sᵀ``
``protect-top``     peft LoRA    top-k of σ       both sides, the k principal components
``protect-random``  peft LoRA    random k         both sides, k random components (seeded)
``act-protect``     peft LoRA    covariance       ``B A P_in``, P_in off the skill's top input eigenvectors
``full-mlp``        (weights)    (none)           every target matrix trained in full
==================  ===========  ===============  =====================================================

"probe" is the run's own probe (``probe.*``: the SVF expert's scores or the activation basis);
``protect-top`` and ``protect-random`` protect exactly as many components per matrix as the
probe does, so they isolate *which* components the probe picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import COMPARE_METHODS

Init = Literal["none", "lora", "pissa", "corda-kpm", "milora", "full"]
Protect = Literal["none", "probe", "top", "random", "activation"]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    init: Init
    protect: Protect = "none"
    #: projection side; ``None``: ``inject.side`` of the configuration
    side: Literal["both", "in", "out"] | None = None
    soft: bool = False
    #: the protected set enters as a soft penalty, not as a projection
    penalty: bool = False

    @property
    def trains(self) -> bool:
        return self.init != "none"

    @property
    def lr_family(self) -> Literal["adapter", "svd-init", "full", "none"]:
        """Which learning-rate grid applies: adapters share one; PiSSA and CorDA, whose initial
        factors are large (σ-scaled, or times the inverse input covariance), get a wider one that
        also reaches lower rates; full fine-tuning has its own."""
        return {"none": "none", "full": "full", "pissa": "svd-init", "corda-kpm": "svd-init"}.get(self.init, "adapter")


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("svf", "none"),
        MethodSpec("lora", "lora"),
        MethodSpec("pissa", "pissa"),
        MethodSpec("corda-kpm", "corda-kpm"),
        MethodSpec("milora", "milora"),
        MethodSpec("olora-penalty", "lora", "probe", side="both", penalty=True),
        MethodSpec("palora", "lora", "probe"),
        MethodSpec("palora-in", "lora", "probe", side="in"),
        MethodSpec("palora-out", "lora", "probe", side="out"),
        MethodSpec("palora-soft", "lora", "probe", side="both", soft=True),
        MethodSpec("protect-top", "lora", "top", side="both"),
        MethodSpec("protect-random", "lora", "random", side="both"),
        MethodSpec("act-protect", "lora", "activation", side="in"),
        MethodSpec("full-mlp", "full"),
    )
}
assert tuple(METHODS) == COMPARE_METHODS, "config.COMPARE_METHODS and the registry must name the same methods"
