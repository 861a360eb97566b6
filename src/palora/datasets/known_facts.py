"""Facts the base model already knows, in several relations, to protect and to measure old knowledge.

Every country of the ``countryinfo`` package gives up to one line per relation
(:data:`RELATIONS`), ``{"prompt", "answer", "aliases", "country", "relation"}``, a completion
prompt the base answers in a few tokens:

==========  ==========================================  ====================================
relation    prompt                                      answer (aliases)
==========  ==========================================  ====================================
capital     ``The capital of {country} is``             the capital (the others of its field)
currency    ``The currency of {country} is the``        its name from ``pycountry`` (the unit:
                                                        ``Afghan afghani`` -> ``afghani``)
language    ``The official language of {country} is``   the first listed (the others listed)
demonym     ``A person from {country} is called``       ``French`` (none)
continent   ``{country} is a country in``               its region, ``America`` for the
                                                        Americas (its sub-regions: ``Caribbean``)
==========  ==========================================  ====================================

A field listing several values (``"Kralendijk / Oranjestad / The Bottom"``, a list) gives the
first as the answer and the others as aliases, and a name with accents also accepts its ASCII
spelling (``Bogotá``, ``Bogota``): normalisation keeps accents. The data stage
(:mod:`palora.stages.data`) keeps the lines the model answers right, greedily, with the
``contains`` checker, so that the model's accuracy on what is kept starts at 1, and
:func:`split_known` splits them by country into a *protect* part (the methods may read its
prompts), a *validation* part (settings are chosen on it) and a held-out test part; neither of
the last two is seen by any protection: a held-out fact shares neither its line nor its country
with a protected one.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from ..core.checkers import normalize
from ._optional import require

# A completion prompt: SmolLM2-135M-Instruct answers 57 of 250 capitals this way, and 0 with
# "Question: What is the capital of {country}?\nAnswer:" (its first token there is <|im_end|>).
PROMPT = "The capital of {country} is"
MAX_NEW_TOKENS = 8
RELATIONS = ("capital", "currency", "language", "demonym", "continent")
#: the prompt of every relation but ``capital`` (whose prompt is ``data_gen.known_prompt``)
PROMPTS = {"currency": "The currency of {country} is the", "language": "The official language of {country} is",
           "demonym": "A person from {country} is called", "continent": "{country} is a country in"}


def _ascii(text: str) -> str:
    """``text`` without its accents (NFKD, combining marks dropped): ``São Tomé`` -> ``Sao Tome``."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


def _distinct(names: Sequence[str]) -> list[str]:
    """``names``, then their ASCII spellings, each once and non-empty."""
    names = [n.strip() for n in names if normalize(n)]
    out: list[str] = []
    for name in names + [_ascii(n) for n in names]:
        if name not in out:
            out.append(name)
    return out


def _names(capital: str | list[str]) -> list[str]:
    """The capitals of one field, then their ASCII spellings, each once and non-empty."""
    return _distinct(capital if isinstance(capital, list) else capital.split("/"))


def countries() -> list[dict[str, Any]]:
    """countryinfo's records (name, capital, ...), sorted by country name."""
    ci = require("countryinfo", "countryinfo")
    return sorted(ci.CountryInfo.all().values(), key=lambda d: d["name"])


def _capital(record: dict[str, Any]) -> list[str]:
    return _names(record["capital"]) if record.get("capital") else []


def _currency(record: dict[str, Any]) -> list[str]:
    pycountry = require("pycountry", "pycountry")
    names = [c.name for code in record.get("currencies") or [] if (c := pycountry.currencies.get(alpha_3=code))]
    return _distinct(names + [n.split()[-1] for n in names]) if names else []


def _language(record: dict[str, Any]) -> list[str]:
    pycountry = require("pycountry", "pycountry")
    return _distinct([lang.name for code in record.get("languages") or []
                      if (lang := pycountry.languages.get(alpha_2=code))])


def _demonym(record: dict[str, Any]) -> list[str]:
    return _distinct([record["demonym"]]) if record.get("demonym") else []


def _continent(record: dict[str, Any]) -> list[str]:
    region = record.get("region")
    if not region:
        return []
    parts = [record.get("intermediateregion") or "", record.get("subregion") or ""]
    return _distinct(["America" if region == "Americas" else region, *parts])


#: relation -> the answer and aliases of one country's record (empty: the record has none)
VALUES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "capital": _capital, "currency": _currency, "language": _language, "demonym": _demonym,
    "continent": _continent}


def candidate_facts(relations: Sequence[str] = RELATIONS, capital_prompt: str = PROMPT) -> list[dict[str, Any]]:
    """One line per country and relation that has a value, by relation then country (a fixed list)."""
    records = countries()
    items = []
    for relation in relations:
        prompt = capital_prompt if relation == "capital" else PROMPTS[relation]
        seen: set[str] = set()
        for record in records:
            country, names = record["name"], VALUES[relation](record)
            if not names or country in seen:
                continue
            seen.add(country)
            items.append({"prompt": prompt.format(country=country), "answer": names[0], "aliases": names[1:],
                          "country": country, "relation": relation})
    return items


def candidate_capitals(prompt: str = PROMPT) -> list[dict[str, Any]]:
    """One capital line per country with a capital, sorted by country. ``prompt`` has a ``{country}`` field."""
    return candidate_facts(("capital",), prompt)


def split_known(items: Sequence[dict[str, Any]], protect_share: float, val_share: float,
                seed: int) -> tuple[list, list, list]:
    """``(protect, val, test)``: the countries shuffled with ``random.Random(seed)``, the first
    ``protect_share`` of them (rounded down) protected with all their facts, the next ``val_share``
    (rounded down) for validation, the rest held out for the test; each in ``items``' order."""
    names = sorted({it["country"] for it in items})
    random.Random(seed).shuffle(names)
    n_protect, n_val = int(len(names) * protect_share), int(len(names) * val_share)
    part = {name: 0 if i < n_protect else 1 if i < n_protect + n_val else 2 for i, name in enumerate(names)}
    return tuple([it for it in items if part[it["country"]] == k] for k in range(3))  # type: ignore[return-value]


def protect_lines(items: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The protect part as training lines ``{"prompt", "completion"}``: the prompt and its answer,
    the inputs whose directions a protecting method keeps its update off."""
    return [{"prompt": it["prompt"], "completion": f" {it['answer']}", "relation": it["relation"],
             "country": it["country"]} for it in items]
