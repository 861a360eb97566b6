"""``palora data``: the demo's data sets as JSONL in the contract format, with a manifest.

Files (DESIGN.md §2 formats; extra keys are ignored by the loaders):

=======================  ==========================================  ==========================
file                     lines                                       from
=======================  ==========================================  ==========================
skill_train.jsonl        ``{prompt, completion}``                     :func:`skill_splits`
skill_val.jsonl          ``{prompt, answer}``                         (numeric checker)
skill_test.jsonl         ``{prompt, answer}``
knowledge_train.jsonl    ``{text}`` and ``{prompt, completion}``      :func:`biography_splits`
knowledge_val.jsonl      ``{prompt, answer, person, attribute, ...}`` (contains checker)
knowledge_test.jsonl     ``{prompt, answer, person, attribute, ...}``
known_facts.jsonl        ``{prompt, answer, aliases, country}``       :func:`candidate_capitals`
manifest.json            spec, counts, sha256 of every file above
=======================  ==========================================  ==========================

``known_facts.jsonl`` holds the capitals the given model answers right (:func:`keep_known`), or
every candidate when no model is given; the filter must see the prompts as the evaluation will
(``chat_template``), and a model that answers none of them is an error. Everything but that
filter is a function of the :class:`DataSpec` alone: the same spec writes byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import atomic_path, write_json
from ..errors import DataError
from .biographies import biography_splits
from .known_facts import candidate_capitals, keep_known
from .skills import SKILL_TASKS, skill_splits
from .spec import DataSpec

FILES = ("skill_train", "skill_val", "skill_test", "knowledge_train", "knowledge_val", "knowledge_test",
         "known_facts")


def demo_data(spec: DataSpec) -> dict[str, list[dict[str, Any]]]:
    """The lines of every file (``known_facts`` unfiltered), keyed by file name without suffix."""
    skill = skill_splits(SKILL_TASKS[spec.skill_task], spec.n_skill_train, spec.n_skill_val,
                         spec.n_skill_test, spec.seed)
    knowledge = biography_splits(spec.n_people, spec.seed, spec.qa_share, spec.attributes)
    return {
        **{f"skill_{split}": rows for split, rows in skill.items()},
        **{f"knowledge_{split}": knowledge[split] for split in ("train", "val", "test")},
        "known_facts": candidate_capitals(spec.known_prompt),
    }


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def write_demo_data(
    out_dir: str | Path,
    spec: DataSpec | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    batch_size: int = 32,
    chat_template: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the files of the module docstring into ``out_dir``, each atomically; their paths by name."""
    spec = spec or DataSpec()
    if (model is None) != (tokenizer is None):
        raise ValueError("write_demo_data: pass both model and tokenizer, or neither")
    rows = demo_data(spec)
    candidates = len(rows["known_facts"])
    if model is not None:
        rows["known_facts"] = keep_known(model, tokenizer, rows["known_facts"], batch_size,
                                         chat_template=chat_template, progress=progress)
        if not rows["known_facts"]:
            raise DataError(
                f"the model answers none of the {candidates} capitals asked as {spec.known_prompt!r}"
                f"{' in its chat template' if chat_template else ''}; try another known_prompt "
                "(e.g. 'The capital of {country} is') or the chat template"
            )
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    files: dict[str, dict[str, Any]] = {}
    for name in FILES:
        data = _jsonl(rows[name])
        paths[name] = out / f"{name}.jsonl"
        with atomic_path(paths[name]) as tmp:
            tmp.write_bytes(data)
        files[paths[name].name] = {"lines": len(rows[name]), "sha256": hashlib.sha256(data).hexdigest()}
    task = SKILL_TASKS[spec.skill_task]
    paths["manifest"] = out / "manifest.json"
    write_json(paths["manifest"], {
        "palora_version": __version__,
        "seed": spec.seed,
        "spec": dataclasses.asdict(spec),
        "skill_task": {"name": spec.skill_task, "dataset": task.name, "kwargs": dict(task.kwargs),
                       "checker": task.checker},
        "known_facts": {"candidates": candidates, "kept": len(rows["known_facts"]),
                        "filtered_by_model": model is not None},
        "files": files,
    })
    return paths
