"""What a method is: a declaration (name, what it protects, its learning-rate family) and a build.

Every method starts from the same model (the SVF expert ``W_z``, with an earlier round merged
when ``inject.protect_adapter`` names one) and trains the same facts under the same budget (rank,
steps, batch); a method says what differs, in one small file of this package:

- ``protects``: the protected set its update stays off, which :mod:`palora.protection` computes or
  loads: ``spectral`` (the paper's probe: singular components of ``W_z`` picked from the SVF
  scales, ``palora probe``), ``residual`` (the same components and ``W``'s null spaces: the update
  stays inside the components outside S), ``top`` / ``random`` (as many components per matrix as the probe,
  the principal ones or random ones), ``covariance`` (the top eigenvectors of the skill's input
  covariance through the expert, ``palora probe`` with the activation basis), or nothing;
- ``build``: the model to train, from a :class:`BuildContext` (peft LoRA through
  :func:`palora.core.orthogonal.add_lora`, seeded the same way for every method, so plain LoRA,
  PALoRA and the ablations start from the same ``A``);
- ``finish``: an optional step after training (``lora-intruders``: peft's post-hoc
  ``reduce_intruder_dimension``);
- ``replays``: a share of its training lines comes from what the model already knows
  (``lora-replay``, :mod:`palora.replay`);
- ``lr_family``: which learning-rate grid ``palora compare`` tries; ``for_expert``: whether the
  result is a plain peft adapter for the expert (``palora run`` / ``palora inject``; the others
  rewrite or train the base weights and are compared by ``palora compare`` only).

:mod:`.registry` lists them; configuration checks, ``--help``, the stages and the comparison read
it. Config validation and ``--help`` import the registry, so a method file imports torch, peft and
the core inside ``build`` (they take seconds to import), never at its top.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..config import InjectConfig
    from ..core.orthogonal import Side
    from ..core.subspace import Subspace
    from ..core.targets import Target

Protects = Literal["spectral", "residual", "top", "random", "covariance"]
LrFamily = Literal["adapter", "svd-init", "full", "none"]
#: the probe basis (``palora probe``'s file) each protected set is read from
PROBE_BASIS: dict[str, str] = {"spectral": "singular", "residual": "singular", "top": "singular",
                               "random": "singular", "covariance": "activation"}


@dataclass
class BuildContext:
    """What a method's build needs: the start model (modified in place), its targets, the
    injection settings and the subspaces the update must stay off (``None``: nothing)."""

    model: nn.Module
    targets: list[Target]
    inject: InjectConfig
    subspaces: dict[str, Subspace] | None
    side: Side  # the projection side: the method's own, else inject.side ("both" with an earlier round)
    soft: bool  # the soft projector I − V_S diag(w) V_Sᵀ
    skill_batches: Callable[[], list[dict[str, torch.Tensor]]] | None = None  # CorDA's covariance data


@dataclass
class Built:
    """The model to train (a PeftModel, or the start model itself for full fine-tuning), the
    penalty added to the loss, if any, and whether ``subspaces`` were applied as a projection
    (then the update is certified to stay off them)."""

    model: nn.Module
    regularizer: Callable[[], torch.Tensor] | None = None
    projected: bool = False


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line: what it trains and what it keeps off (--help, the registry's table)
    build: Callable[[BuildContext], Built] | None  # None: trains nothing (the expert alone)
    protects: Protects | None = None
    lr_family: LrFamily = "adapter"
    for_expert: bool = True
    side: Literal["both", "in", "out"] | None = None  # None: inject.side
    soft: bool = False
    #: InjectConfig keys that this method alone reads (they enter its stage digest, no other's)
    reads: tuple[str, ...] = ()
    finish: Callable[[nn.Module], None] | None = None
    replays: bool = False  # a share of its training lines replayed from probe.keep_data (palora.replay)
    paper: bool = False  # the method of arXiv 2605.24549

    @property
    def trains(self) -> bool:
        return self.build is not None

    @property
    def probe_basis(self) -> str | None:
        """``singular`` or ``activation``: the probe file its protected set comes from (``None``: none)."""
        return None if self.protects is None else PROBE_BASIS[self.protects]


def lora(ctx: BuildContext, **init: Any) -> Built:
    """peft LoRA on the targets, projected off ``ctx.subspaces`` on ``ctx.side`` (plain LoRA when
    there are none): ``ΔW = (α/r) P_out B A P_in``. ``init``: peft's initialisation options
    (``init_lora_weights="pissa"``, ...)."""
    from ..core.orthogonal import add_lora

    i = ctx.inject
    model = add_lora(ctx.model, ctx.targets, i.rank, i.alpha, i.dropout, subspaces=ctx.subspaces, side=ctx.side,
                     soft=ctx.soft, init=init)
    return Built(model, projected=ctx.subspaces is not None)
