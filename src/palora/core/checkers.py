"""Answer checkers: does a generated output match the reference answer (or one of its aliases)?

A checker is ``check(output, answer, aliases=()) -> bool``:

- ``numeric``: the first number of the output equals the answer as a number (within 1e-6,
  absolute or relative). The model answers right after ``"Answer:"``, so its first number is its
  answer; what it rambles on about afterwards does not count.
- ``exact``: the first non-blank line of the output, normalised, equals the normalised answer.
- ``contains``: the normalised answer occurs in the normalised output as whole words.

Normalisation is SQuAD's: lower case, punctuation and the articles a/an/the removed, runs of
white space collapsed. A reference that cannot be checked (not a number for ``numeric``, empty
after normalisation otherwise) raises :class:`~palora.errors.DataError`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence

from ..errors import ConfigError, DataError

Checker = Callable[[str, str, Sequence[str]], bool]

# An optional sign (not glued to a preceding word, so "3-5" reads 3), then digits with optional
# thousands groups ("1,234,567", but "12,3456" reads 12), then an optional decimal part; or ".5".
_NUMBER = re.compile(
    r"(?:(?<![\w])[-+\u2212])?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def number_text(text: str) -> str | None:
    """The first number in ``text`` as written, separators removed (``"-1234.5"``), or None."""
    match = _NUMBER.search(text)
    return None if match is None else match.group().replace(",", "").replace("\u2212", "-")


def extract_number(text: str) -> float | None:
    """The first number in ``text`` (signs, decimals, ``1,234`` separators), or None."""
    written = number_text(text)
    return None if written is None else float(written)


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    # Unicode category P* covers ASCII punctuation and typographic quotes, dashes, ...
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def parse_reference(answer: str) -> float:
    """A reference answer as a number: the whole string, allowing ``1,234``, ``$``, ``%``."""
    cleaned = answer.strip().replace(",", "").replace("\u2212", "-").strip("$%").strip()
    try:
        value = float(cleaned)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(
            f"numeric checker cannot parse the answer {answer!r} as a number (use the exact or contains checker "
            "for answers in words)"
        )
    return value


def _normalized_references(name: str, answer: str, aliases: Sequence[str]) -> list[str]:
    refs = [normalize(r) for r in (answer, *aliases)]
    if not refs[0]:
        raise DataError(f"{name} checker: the answer {answer!r} is empty after normalisation")
    return [r for r in refs if r]


def check_numeric(output: str, answer: str, aliases: Sequence[str] = ()) -> bool:
    """The first number of ``output`` equals ``answer`` or an alias (within 1e-6, absolute or relative)."""
    refs = [parse_reference(r) for r in (answer, *aliases)]
    value = extract_number(output)
    return value is not None and any(math.isclose(value, r, rel_tol=1e-6, abs_tol=1e-6) for r in refs)


def check_exact(output: str, answer: str, aliases: Sequence[str] = ()) -> bool:
    """The first non-blank line of ``output``, normalised, equals a normalised reference."""
    refs = _normalized_references("exact", answer, aliases)
    lines = output.strip().splitlines()
    first = normalize(lines[0]) if lines else ""
    return first in refs


def check_contains(output: str, answer: str, aliases: Sequence[str] = ()) -> bool:
    """A normalised reference occurs in the normalised ``output`` as whole words."""
    refs = _normalized_references("contains", answer, aliases)
    # Normalised text is words joined by single spaces, so padding both sides with a space
    # turns a substring test into a whole-word test.
    padded = f" {normalize(output)} "
    return any(f" {r} " in padded for r in refs)


CHECKERS: dict[str, Checker] = {
    "numeric": check_numeric,
    "exact": check_exact,
    "contains": check_contains,
}


def check_reference(name: str, answer: str, aliases: Sequence[str] = ()) -> None:
    """Refuse (DataError) a reference the checker ``name`` cannot compare with, before any generation.

    Checking against an empty output reads every reference the way a real check does.
    """
    get_checker(name)("", answer, aliases)


def get_checker(name: str) -> Checker:
    """The checker called ``name``; ConfigError naming the valid ones otherwise."""
    try:
        return CHECKERS[name]
    except KeyError:
        raise ConfigError(f"unknown checker {name!r}; valid checkers: {', '.join(CHECKERS)}") from None
