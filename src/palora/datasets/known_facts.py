"""Facts the base model already knows: country capitals, to measure retention of old knowledge.

:func:`candidate_capitals` turns every country of the ``countryinfo`` package that has a capital
into an evaluation line ``{"prompt": "Question: What is the capital of {country}?\\nAnswer:",
"answer": capital, "aliases": [...], "country": country}``. A field listing several capitals
(``"Kralendijk / Oranjestad / The Bottom"``, a list) gives the first as the answer and the others
as aliases, and a name with accents also accepts its ASCII spelling (``Bogotá``, ``Bogota``):
normalisation keeps accents. The data stage (:mod:`palora.stages.data`) keeps the lines the model answers right, greedily,
with the ``contains`` checker, so that the model's accuracy on what is kept starts at 1.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from ..core.checkers import normalize
from ._optional import require

# A completion prompt: SmolLM2-135M-Instruct answers 57 of 250 capitals this way, and 0 with
# "Question: What is the capital of {country}?\nAnswer:" (its first token there is <|im_end|>).
PROMPT = "The capital of {country} is"
MAX_NEW_TOKENS = 8


def _ascii(text: str) -> str:
    """``text`` without its accents (NFKD, combining marks dropped): ``São Tomé`` -> ``Sao Tome``."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


def _names(capital: str | list[str]) -> list[str]:
    """The capitals of one field, then their ASCII spellings, each once and non-empty."""
    parts = capital if isinstance(capital, list) else capital.split("/")
    names = [p.strip() for p in parts if normalize(p)]
    out: list[str] = []
    for name in names + [_ascii(n) for n in names]:
        if name not in out:
            out.append(name)
    return out


def countries() -> list[dict[str, Any]]:
    """countryinfo's records (name, capital, ...), sorted by country name."""
    ci = require("countryinfo", "countryinfo")
    return sorted(ci.CountryInfo.all().values(), key=lambda d: d["name"])


def candidate_capitals(prompt: str = PROMPT) -> list[dict[str, Any]]:
    """One evaluation line per country with a capital, sorted by country (a fixed list).

    ``prompt`` has a ``{country}`` field; the default asks in the demo's question format.
    """
    items = []
    seen: set[str] = set()
    for record in countries():
        country, capital = record["name"], record.get("capital")
        names = _names(capital) if capital else []
        if not names or country in seen:
            continue
        seen.add(country)
        items.append({"prompt": prompt.format(country=country), "answer": names[0],
                      "aliases": names[1:], "country": country})
    return items
