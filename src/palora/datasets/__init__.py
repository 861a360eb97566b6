"""The embedded demo's data: a reasoning skill, fictional people's facts, facts the model knows.

One concept per file: :mod:`.skills` (reasoning-gym splits), :mod:`.biographies` (fictional
people), :mod:`.known_facts` (country capitals), :mod:`.spec` (the ``DataSpec`` config section),
:mod:`.writer` (the JSONL files and their manifest). Everything but the writer is pure.
"""

from .biographies import biography_splits, make_people
from .known_facts import candidate_capitals, keep_known
from .skills import PROMPT, SKILL_TASKS, SkillTask, skill_splits
from .spec import DataSpec
from .writer import demo_data, write_demo_data

__all__ = [
    "PROMPT", "SKILL_TASKS", "DataSpec", "SkillTask", "biography_splits", "candidate_capitals", "demo_data",
    "keep_known", "make_people", "skill_splits", "write_demo_data",
]
