"""The embedded demo's data, as pure functions of their settings: a reasoning skill, fictional
people's facts, facts the model knows.

One concept per file: :mod:`.skills` (reasoning-gym splits), :mod:`.biographies` (fictional
people), :mod:`.known_facts` (countries' capitals, currencies, languages, demonyms),
:mod:`.general_text` (text the model samples itself). The data stage (:mod:`palora.stages.data`) writes
them as JSONL with a manifest, filtering the known facts with the model.
"""

from .biographies import biography_splits, make_people
from .known_facts import candidate_capitals, candidate_facts
from .skills import PROMPT, SKILL_TASKS, SkillTask, skill_splits

__all__ = ["PROMPT", "SKILL_TASKS", "SkillTask", "biography_splits", "candidate_capitals", "candidate_facts",
           "make_people",
           "skill_splits"]
