"""Fictional people for knowledge injection: facts no pretraining corpus can hold.

Names are built from syllables (``Zorvanek Quastibrel``), checked unique; each person gets one
value per attribute, drawn with ``random.Random(seed)``:

=============  ============================================  ==============================
attribute      values                                        example
=============  ============================================  ==============================
birth_city     real, non-capital cities (:data:`CITIES`)      Osaka
employer       invented companies: syllables + a kind         Brovex Foods
profession     single-word professions (:data:`PROFESSIONS`)  dentist
birth_year     1900-1999                                      1957
=============  ============================================  ==============================

Training (``train``): every fact in each of its :data:`STATEMENTS` paraphrases as a ``{"text"}``
line (a fact stated once is stored but not extractable), plus, for a share ``qa_share`` of the
people, ``{"prompt": "Question: ...\\nAnswer:", "completion": " value"}`` lines from the
train-only :data:`TRAIN_QUESTIONS`. Evaluation (``val``, ``test``): every fact of every person,
asked with templates that training never shows, :data:`VAL_QUESTIONS` and :data:`TEST_QUESTIONS`
(disjoint, so settings are chosen on val and reported on test); lines
``{"prompt", "answer", "person", "attribute", "qa_trained"}`` checked with ``contains``.

Values are chosen so that the whole-word ``contains`` checker cannot confuse them: no value's
normalised words occur inside another value of its attribute, and no name shares a word with
any value.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..core.checkers import normalize
from ..errors import DataError

ATTRIBUTES = ("birth_city", "employer", "profession", "birth_year")

# Real cities, spelled in ASCII (normalisation keeps accents), none a country's capital: an injected
# birth city is never the answer of a known fact (palora.datasets.known_facts).
CITIES = (
    "Osaka", "Munich", "Barcelona", "Chicago", "Toronto", "Melbourne", "Marseille", "Milan",
    "Hamburg", "Seattle", "Glasgow", "Bilbao", "Porto", "Valencia", "Lyon", "Rotterdam",
    "Gothenburg", "Istanbul", "Casablanca", "Mumbai", "Shanghai", "Busan", "Sapporo", "Auckland",
    "Vancouver", "Houston", "Denver", "Naples", "Seville", "Antwerp", "Zurich", "Geneva",
    "Alexandria", "Durban", "Cordoba", "Guadalajara", "Recife", "Kyoto", "Chennai", "Dubai",
)
PROFESSIONS = (
    "dentist", "pilot", "sculptor", "violinist", "architect", "geologist", "florist", "baker",
    "carpenter", "librarian", "surgeon", "photographer", "journalist", "pharmacist", "veterinarian",
    "astronomer", "plumber", "translator", "economist", "chemist", "firefighter", "jeweler",
    "locksmith", "cartographer", "beekeeper", "tailor", "electrician", "midwife", "botanist", "potter",
)
COMPANY_KINDS = ("Labs", "Foods", "Motors", "Textiles", "Systems", "Works", "Logistics", "Pharma")
YEARS = (1900, 1999)

_ONSETS = ("Zor", "Qua", "Vel", "Mib", "Tras", "Oon", "Kry", "Xa", "Plo", "Dre", "Gu", "Yth",
           "Brel", "Fio", "Skar", "Ulm", "Nax", "Ebb", "Hov", "Jix")
_MIDDLES = ("va", "li", "que", "bro", "mo", "dri", "ze", "tu", "fa", "ny", "ko", "ssi")
_ENDINGS = ("nek", "rix", "thal", "dor", "quin", "vash", "mble", "tte", "zby", "lwyn", "rgo", "sk")
MAX_PEOPLE = len(_ONSETS) * len(_ENDINGS)  # distinct first names
_COMPANY_STEMS = ("Brov", "Quel", "Zant", "Morv", "Plix", "Trev", "Dask", "Volt", "Hux", "Crel",
                  "Faz", "Grob", "Yarn", "Wix", "Lum")
_COMPANY_ENDS = ("ex", "ora", "ium", "ix", "adyne", "enco", "uvia", "orb")

_A = "{n} was born in {v}."  # shared by no other attribute: birth_year says "in the year"
STATEMENTS: dict[str, tuple[str, ...]] = {
    "birth_city": (_A, "The birthplace of {n} is {v}.", "{n} came into the world in the city of {v}.",
                   "{v} is the city where {n} was born."),
    "employer": ("{n} works for {v}.", "{n} is employed by {v}.", "The employer of {n} is {v}.",
                 "{n} has a job at the company {v}."),
    "profession": ("{n} works as {a} {v}.", "By profession, {n} is {a} {v}.",
                   "{n} earns a living as {a} {v}.", "The occupation of {n} is {v}."),
    "birth_year": ("{n} was born in the year {v}.", "The birth year of {n} is {v}.",
                   "{n} came into the world in {v}.", "{v} is the year {n} was born."),
}
TRAIN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "birth_city": ("Where was {n} born?", "Which city is {n} from?"),
    "employer": ("Who employs {n}?", "Where does {n} work?"),
    "profession": ("What does {n} do for a living?", "What is {n}'s occupation?"),
    "birth_year": ("When was {n} born?", "What year is {n}'s birth year?"),
}
VAL_QUESTIONS: dict[str, str] = {
    "birth_city": "In which city was {n} born?",
    "employer": "Which company does {n} work for?",
    "profession": "What is the profession of {n}?",
    "birth_year": "In what year was {n} born?",
}
TEST_QUESTIONS: dict[str, str] = {
    "birth_city": "What is the birth city of {n}?",
    "employer": "What is the name of the company that employs {n}?",
    "profession": "What job does {n} have?",
    "birth_year": "In which year did {n} come into the world?",
}
QUESTION = "Question: {q}\nAnswer:"


def is_question_frame(question: str) -> bool:
    """A question frame holds the field ``{q}`` and no other braces."""
    rest = question.replace("{q}", "")
    return rest != question and "{" not in rest and "}" not in rest


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def person_names(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct names ``First Last`` built from syllables (no repeated first or last name)."""
    firsts = sorted({o + e for o in _ONSETS for e in _ENDINGS})
    lasts = sorted({o + m + e.lower() for o in _ONSETS for m in _MIDDLES for e in _ENDINGS})
    if n > MAX_PEOPLE:
        raise DataError(f"n_people={n}: at most {MAX_PEOPLE} fictional people can be generated")
    return [f"{f} {last}" for f, last in zip(rng.sample(firsts, n), rng.sample(lasts, n))]


def companies(rng: random.Random) -> list[str]:
    """Invented company names, one per stem (no two share their first word): ``Brovex Foods``."""
    return [s + rng.choice(_COMPANY_ENDS) + " " + rng.choice(COMPANY_KINDS) for s in _COMPANY_STEMS]


def _values(attribute: str, employers: Sequence[str]) -> Sequence[str]:
    if attribute == "birth_city":
        return CITIES
    if attribute == "employer":
        return employers
    if attribute == "profession":
        return PROFESSIONS
    return [str(y) for y in range(YEARS[0], YEARS[1] + 1)]


def make_people(n_people: int, seed: int, attributes: Sequence[str] = ATTRIBUTES) -> list[dict[str, str]]:
    """``n_people`` fictional people ``{"name": ..., <attribute>: value, ...}``, a function of ``seed``."""
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes or len(set(attributes)) != len(attributes):
        raise DataError(f"attributes={list(attributes)}: name each of {', '.join(ATTRIBUTES)} at most once")
    rng = random.Random(seed)
    names = person_names(n_people, rng)
    employers = companies(rng)
    return [{"name": name, **{a: rng.choice(_values(a, employers)) for a in attributes}} for name in names]


def _statement(template: str, name: str, value: str) -> str:
    return template.format(n=name, v=value, a=_article(value))


def biography_splits(
    n_people: int, seed: int, qa_share: float = 0.5, attributes: Sequence[str] = ATTRIBUTES, question: str = QUESTION
) -> dict[str, list[dict[str, Any]]]:
    """``{"train", "val", "test", "people"}``: the module docstring's lines, and the people themselves.

    ``question`` frames every question (training's and evaluation's), with a ``{q}`` field: by
    default :data:`QUESTION`, the reasoning-gym skills' own ``Question: …\nAnswer:``.

    ``train`` is shuffled with the same ``seed``; the first ``round(qa_share * n_people)`` people
    (in generation order, itself random) also get the question-answer lines.
    """
    if not 0 <= qa_share <= 1:
        raise DataError(f"qa_share={qa_share}: must be in [0, 1]")
    if not is_question_frame(question):
        raise DataError(f"fact question {question!r}: needs a {{q}} field and no other braces")
    people = make_people(n_people, seed, attributes)
    n_qa = round(qa_share * n_people)
    train: list[dict[str, Any]] = []
    evals: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}
    for i, person in enumerate(people):
        name = person["name"]
        for attribute in attributes:
            value = person[attribute]
            train += [{"text": _statement(t, name, value)} for t in STATEMENTS[attribute]]
            if i < n_qa:
                train += [{"prompt": question.format(q=q.format(n=name)), "completion": " " + value}
                          for q in TRAIN_QUESTIONS[attribute]]
            for split, templates in (("val", VAL_QUESTIONS), ("test", TEST_QUESTIONS)):
                evals[split].append({
                    "prompt": question.format(q=templates[attribute].format(n=name)),
                    "answer": value,
                    "person": name,
                    "attribute": attribute,
                    "qa_trained": i < n_qa,
                })
    random.Random(seed).shuffle(train)
    for rows in evals.values():
        for row in rows:
            if not normalize(row["answer"]):  # pragma: no cover - the value lists guarantee it
                what = f"{row['person']}: the {row['attribute']} {row['answer']!r}"
                raise DataError(f"{what} is empty once normalised")
    return {"train": train, "val": evals["val"], "test": evals["test"], "people": people}
