"""Skill data from reasoning-gym's seeded generators: train / val / test from different seeds.

A :class:`SkillTask` names a reasoning-gym dataset and its generator settings. Each item
``{question, answer}`` becomes

- a training line ``{"prompt": "Question: {q}\\nAnswer:", "completion": " {answer}"}``;
- an evaluation line ``{"prompt": "Question: {q}\\nAnswer:", "answer": "{answer}"}``.

reasoning-gym draws item ``idx`` of a dataset with seed ``S`` from ``Random(S + idx)``, so the
datasets of seeds ``S`` and ``S + 1`` share all but one item. The split seeds are therefore spaced
``SEED_STRIDE`` apart, ``S_split = (3 * seed + split) * SEED_STRIDE``, so that no two splits (and
no two data seeds) draw from the same ``Random`` states. Small tasks still repeat questions (two
1-digit terms and ± give only 242 of them), so the evaluation splits hold distinct questions
that occur in no earlier split: val excludes train, test excludes train and val. The cost is a
shift toward the rarer (longer) questions in val and test when train covers the small ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.checkers import get_checker
from ..errors import DataError
from ._optional import require

PROMPT = "Question: {q}\nAnswer:"
SPLITS = ("train", "val", "test")
SEED_STRIDE = 10**7  # > any split's number of draws, so split seeds never share a Random state
MAX_DRAWS_PER_ITEM = 50  # an evaluation split gives up after 50 draws per item it asks for


@dataclass(frozen=True)
class SkillTask:
    """A reasoning-gym dataset ``name`` with generator settings ``kwargs`` and its answer checker."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    checker: str = "numeric"
    help: str = ""


def _arith(name: str, terms: int, digits: tuple[int, int], help: str) -> SkillTask:
    kwargs: dict[str, Any] = dict(min_terms=terms, max_terms=terms, min_digits=digits[0],
                                  max_digits=digits[1])
    if name == "basic_arithmetic":
        # "Calculate a - b." with non-negative terms in [0, 10^digits], no parentheses
        kwargs.update(operators=("+", "-"), allow_parentheses=False, allow_negation=False)
    return SkillTask(name, kwargs, "numeric", help)


#: named tasks, the values ``DataSpec.skill_task`` accepts
SKILL_TASKS: dict[str, SkillTask] = {
    "basic_arithmetic_2": _arith("basic_arithmetic", 2, (1, 2), "basic_arithmetic, 2 terms, +/-, 1-2 digits"),
    "basic_arithmetic_2d": _arith("basic_arithmetic", 2, (2, 2), "basic_arithmetic, 2 terms, +/-, 2 digits"),
    "basic_arithmetic_3x1": _arith("basic_arithmetic", 3, (1, 1), "basic_arithmetic, 3 terms, +/-, 1 digit"),
    "chain_sum_2": _arith("chain_sum", 2, (1, 2), "chain_sum, 2 terms, 1-2 digits"),
    "chain_sum_3": _arith("chain_sum", 3, (1, 2), "chain_sum, 3 terms, 1-2 digits"),
    # skills of another kind than arithmetic, e.g. for a second expert (probe.extra_runs)
    "letter_counting": SkillTask("letter_counting", {"min_words": 3, "max_words": 5}, "numeric",
                                 "letter_counting, how often a letter occurs in 3-5 words"),
    "leg_counting": SkillTask("leg_counting", {"min_animals": 2, "max_animals": 3, "max_instances": 3}, "numeric",
                              "leg_counting, the legs of 2-3 kinds of animals"),
    "spell_backward": SkillTask("spell_backward", {"min_word_len": 3, "max_word_len": 5}, "exact",
                                "spell_backward, a 3-5 letter word spelled backward"),
}


def split_seed(seed: int, split: str) -> int:
    """The reasoning-gym seed of ``split`` for the data seed ``seed`` (see the module docstring)."""
    return (3 * seed + SPLITS.index(split)) * SEED_STRIDE


def _items(task: SkillTask, seed: int, size: int) -> Any:
    rg = require("reasoning_gym", "reasoning-gym")
    return rg.create_dataset(task.name, size=size, seed=seed, **dict(task.kwargs))


def _draw(task: SkillTask, seed: int, n: int, exclude: set[str], distinct: bool) -> list[dict[str, Any]]:
    """The first ``n`` items of the dataset of ``seed`` whose question is not in ``exclude``."""
    cap = n if not exclude and not distinct else max(MAX_DRAWS_PER_ITEM * n, 1000)
    dataset = _items(task, seed, cap)
    kept: list[dict[str, Any]] = []
    seen = set(exclude)
    for idx in range(cap):
        item = dataset[idx]
        if item["question"] in seen:
            continue
        if distinct:
            seen.add(item["question"])
        kept.append(item)
        if len(kept) == n:
            return kept
    raise DataError(
        f"skill task {task.name} {dict(task.kwargs)}: only {len(kept)} of {n} new distinct questions in "
        f"{cap} draws; ask for fewer items or pick a task with more distinct questions"
    )


def _check_answer(task: SkillTask, item: dict[str, Any]) -> str:
    answer = str(item["answer"])
    if not get_checker(task.checker)(answer, answer, ()):  # raises DataError if unreadable
        raise DataError(f"skill task {task.name}: the {task.checker} checker rejects its answer {answer!r}")
    return answer


def skill_splits(task: SkillTask, n_train: int, n_val: int, n_test: int, seed: int) -> dict[str, list[dict]]:
    """``{"train": [{prompt, completion}], "val": [{prompt, answer}], "test": [{prompt, answer}]}``.

    Train keeps the generator's distribution (repeats included); val and test hold distinct
    questions absent from the earlier splits. Every answer passes ``task.checker`` against itself.
    """
    for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n <= 0:
            raise DataError(f"skill_splits: {key}={n} must be positive")
    train = _draw(task, split_seed(seed, "train"), n_train, set(), distinct=False)
    seen = {item["question"] for item in train}
    val = _draw(task, split_seed(seed, "val"), n_val, seen, distinct=True)
    seen |= {item["question"] for item in val}
    test = _draw(task, split_seed(seed, "test"), n_test, seen, distinct=True)

    def lines(items: list[dict[str, Any]], key: str, lead: str) -> list[dict[str, str]]:
        return [{"prompt": PROMPT.format(q=it["question"]), key: lead + _check_answer(task, it)}
                for it in items]

    return {"train": lines(train, "completion", " "), "val": lines(val, "answer", ""),
            "test": lines(test, "answer", "")}
