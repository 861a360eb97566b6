"""The parameters of the demo data (``palora data``), a typed and self-checking config section."""

from __future__ import annotations

from dataclasses import dataclass

from ..datasets.biographies import ATTRIBUTES, MAX_PEOPLE, QUESTION, is_question_frame
from ..datasets.known_facts import PROMPT as KNOWN_PROMPT
from ..datasets.known_facts import RELATIONS
from ..datasets.skills import SKILL_TASKS
from .fields import check_value, documented


@dataclass
class DataSpec:
    """What ``palora data`` generates: skill splits, fictional biographies, known facts, general text."""

    skill_task: str = documented("basic_arithmetic_2", f"reasoning-gym skill task: {', '.join(SKILL_TASKS)}")
    n_skill_train: int = documented(2000, "skill training lines {prompt, completion}")
    n_skill_val: int = documented(200, "skill validation questions (distinct, none in train)")
    n_skill_test: int = documented(500, "skill test questions (distinct, none in train or val)")
    n_people: int = documented(100, "fictional people whose facts are injected")
    qa_share: float = documented(0.5, "share of the people who also get train-only question-answer lines")
    attributes: list[str] = documented(list(ATTRIBUTES), f"facts per person, among {', '.join(ATTRIBUTES)}")
    fact_question: str | None = documented(
        None, f"frame of the facts' questions, in training and evaluation, with a {{q}} field; null: {QUESTION!r}, "
        "the skill's own frame (another, e.g. 'Trivia: {q}\\nReply:', tests whether plain LoRA's forgetting is the "
        "facts' format taking over the skill's prompts)")
    known_prompt: str = documented(KNOWN_PROMPT, "prompt of a known capital, with a {country} field")
    known_relations: list[str] = documented(
        list(RELATIONS), f"relations of the facts the model already knows (countryinfo, pycountry), among "
        f"{', '.join(RELATIONS)}; only those it answers right are kept")
    known_protect_share: float = documented(
        0.35, "share of the countries whose known facts form the protect split (known_protect.jsonl, which "
        "probe.keep_data may read); the others' facts are held out (known_val.jsonl, known_facts.jsonl)")
    known_val_share: float = documented(
        0.15, "share of the countries whose known facts are held out for validation (known_val.jsonl, where "
        "settings are chosen); the rest are the test (known_facts.jsonl)")
    general_per_opening: int = documented(
        8, "general text the base model samples itself (general.jsonl): continuations per generic opening "
        "(20 openings; 0: none)")
    seed: int = documented(0, "seed of the generated data (independent of the training seed)")

    def __post_init__(self) -> None:
        tasks = ", ".join(SKILL_TASKS)
        check_value(self.skill_task in SKILL_TASKS, "skill_task", self.skill_task, f"choose one of {tasks}")
        for key in ("n_skill_train", "n_skill_val", "n_skill_test", "n_people"):
            check_value(getattr(self, key) > 0, key, getattr(self, key), "must be positive")
        check_value(self.n_people <= MAX_PEOPLE, "n_people", self.n_people, f"at most {MAX_PEOPLE}")
        check_value(0 <= self.qa_share <= 1, "qa_share", self.qa_share, "must be in [0, 1]")
        check_value(len(self.attributes) > 0, "attributes", self.attributes, "name at least one attribute")
        for a in self.attributes:
            check_value(a in ATTRIBUTES, "attributes", a, f"known: {', '.join(ATTRIBUTES)}")
        check_value(len(set(self.attributes)) == len(self.attributes), "attributes", self.attributes, "repeated")
        check_value(self.fact_question is None or is_question_frame(self.fact_question), "fact_question",
                    self.fact_question, "needs a {q} field and no other braces")
        check_value(len(self.known_relations) > 0, "known_relations", self.known_relations, "name at least one")
        for r in self.known_relations:
            check_value(r in RELATIONS, "known_relations", r, f"known: {', '.join(RELATIONS)}")
        check_value(len(set(self.known_relations)) == len(self.known_relations), "known_relations",
                    self.known_relations, "repeated")
        check_value(0 <= self.known_protect_share < 1, "known_protect_share", self.known_protect_share,
                    "must be in [0, 1)")
        check_value(0 <= self.known_val_share < 1 - self.known_protect_share, "known_val_share",
                    self.known_val_share, "must be in [0, 1 - known_protect_share): the test split needs countries")
        check_value(self.general_per_opening >= 0, "general_per_opening", self.general_per_opening, "must be >= 0")
        check_value("{country}" in self.known_prompt, "known_prompt", self.known_prompt, "needs a {country} field")
