"""The only list of methods: configuration checks, ``--help``, the stages and ``palora compare`` read it.

Adding a method is one file in this package (a :class:`~palora.methods.base.Method` named
``METHOD``) and one line below. Order: the order ``--help`` and the comparison list them.
"""

from __future__ import annotations

from . import (
    act_protect,
    act_protect_replay,
    corda_kpm,
    full_mlp,
    lora,
    lora_intruders,
    lora_replay,
    mica,
    milora,
    olora_penalty,
    palora,
    palora_in,
    palora_out,
    palora_residual,
    palora_soft,
    pissa,
    protect_random,
    protect_top,
    svf,
)
from .base import Method

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (
    svf,
    palora,
    lora,
    lora_replay,
    palora_in,
    palora_out,
    palora_soft,
    palora_residual,
    olora_penalty,
    protect_top,
    protect_random,
    act_protect,
    act_protect_replay,
    mica,
    lora_intruders,
    pissa,
    corda_kpm,
    milora,
    full_mlp,
)}

#: the method of the paper (arXiv 2605.24549)
PAPER = next(m.name for m in METHODS.values() if m.paper)
#: the methods whose result is a plain peft adapter for the expert (``palora run`` / ``palora inject``)
FOR_EXPERT = tuple(m.name for m in METHODS.values() if m.for_expert)
#: compared by ``palora compare`` only: they rewrite (or train) the base weights, or train nothing
COMPARE_ONLY = tuple(m.name for m in METHODS.values() if not m.for_expert)


def table() -> str:
    """One line per method, ``name  summary [notes]`` (``--help``)."""
    width = max(len(n) for n in METHODS)
    notes = {n: (" [the paper's method]" if m.paper else "") + ("" if m.for_expert else " [palora compare only]")
             for n, m in METHODS.items()}
    return "\n".join(f"  {n:<{width}}  {m.summary}{notes[n]}" for n, m in METHODS.items())
