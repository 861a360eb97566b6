"""How a wrong numeric answer is wrong: the kinds that tell a weakened skill from the injected
facts' answer format taking over the skill's prompts.

For a wrong output of the ``numeric`` checker (:mod:`palora.core.checkers`), with ``p`` the first
number of the output, ``d(p)`` the digits of its whole part as written (sign, separators and
decimals dropped), ``a`` the reference and ``F`` the whole numbers among the facts' answers
(``1987``, ...):

* ``near``:  ``|p − a| ≤ max(1, 0.1·|a|)`` (an arithmetic slip: a carry, an off-by-one);
* ``fact``:  ``d(p)`` is a fact number or its first two or more digits (``19``, ``198`` of ``1987``):
  the facts' format, begun or whole;
* ``other``: any other number;
* ``words``: the output holds no number at all.

The kinds are tested in that order: an output near the reference counts as a slip even when it is
also a fact number's beginning. A genuine slip far from the reference can still read as a fact
number (``19`` for ``-37`` when the facts hold years 19xx): the expert's own ``fact`` rate, with no
facts injected, is that chance level, and a model's excess over it is the format taking over.
Without numeric facts (``F`` empty) ``fact`` is always 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from .checkers import number_text, parse_reference

Kind = Literal["near", "fact", "other", "words"]
KINDS: tuple[Kind, ...] = ("near", "fact", "other", "words")


def _digits(written: str) -> str:
    return written.lstrip("+-").split(".")[0]


def fact_prefixes(answers: Iterable[str]) -> frozenset[str]:
    """Every whole-number fact answer and its beginnings of two or more digits (``F`` and its prefixes)."""
    out = set()
    for ans in answers:
        digits = ans.strip().replace(",", "")
        if digits.isdigit() and len(digits) >= 2:
            out.update(digits[:k] for k in range(2, len(digits) + 1))
    return frozenset(out)


def kind_of(output: str, answer: str, facts: frozenset[str] = frozenset()) -> Kind:
    """The kind of a wrong ``output`` to a question whose reference is the number ``answer``;
    ``facts``: :func:`fact_prefixes` of the facts' answers."""
    written = number_text(output)
    if written is None:
        return "words"
    p, a = float(written), parse_reference(answer)
    if abs(p - a) <= max(1.0, 0.1 * abs(a)):
        return "near"
    return "fact" if _digits(written) in facts else "other"


def tally(outputs: Sequence[str], answers: Sequence[str], correct: Sequence[bool],
          facts: frozenset[str] = frozenset()) -> dict[str, int]:
    """``{kind: count}`` over the wrong outputs (every kind present, zeros included)."""
    counts = dict.fromkeys(KINDS, 0)
    for out, ans, ok in zip(outputs, answers, correct, strict=True):
        if not ok:
            counts[kind_of(out, ans, facts)] += 1
    return counts
