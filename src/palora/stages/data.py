"""The ``data`` stage (``palora data``, first step of ``palora demo``): the demo's data sets as JSONL.

Files (the contract's formats; extra keys are ignored by the loaders):

=======================  ==========================================  ==========================
file                     lines                                       from
=======================  ==========================================  ==========================
skill_train.jsonl        ``{prompt, completion}``                     :func:`skill_splits`
skill_val.jsonl          ``{prompt, answer}``                         (numeric checker)
skill_test.jsonl         ``{prompt, answer}``
knowledge_train.jsonl    ``{text}`` and ``{prompt, completion}``      :func:`biography_splits`
knowledge_val.jsonl      ``{prompt, answer, person, attribute, ...}`` (contains checker)
knowledge_test.jsonl     ``{prompt, answer, person, attribute, ...}``
known_facts.jsonl        ``{prompt, answer, aliases, country,         :func:`candidate_facts`,
                         relation}``: held out, the test              :func:`split_known`
known_val.jsonl          the same: held out, for validation
known_protect.jsonl      ``{prompt, completion, relation, country}``  :func:`protect_lines`
general.jsonl            ``{text}``, sampled by the model             :func:`general_lines`
manifest.json            spec, counts, sha256 of every file above
=======================  ==========================================  ==========================

The known facts are those the given model answers right (:func:`keep_known`), or every candidate
when no model is given; the filter must see the prompts as the evaluation will
(``chat_template``), and a model that answers none of them is an error. They are split by country:
``known_protect.jsonl`` is what a protecting method may read (``probe.keep_data``; ``palora demo``
points it there with ``general.jsonl``); ``known_val.jsonl`` and ``known_facts.jsonl`` are the
held-out facts that measure old knowledge (validation, test) and that no protection sees.
``general.jsonl`` is empty without a model. Everything but the filter and the sampled text is a
function of the :class:`DataSpec` alone: the same spec writes byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import DataSpec, RunConfig, to_dict
from ..core.checkers import check_contains
from ..datasets.biographies import QUESTION, biography_splits
from ..datasets.general_text import OPENINGS, general_lines
from ..datasets.known_facts import MAX_NEW_TOKENS, candidate_facts, protect_lines, split_known
from ..datasets.skills import SKILL_TASKS, skill_splits
from ..errors import ConfigError, DataError
from ..evaluation import generate, sample
from ..io.artifacts import RunDir, atomic_path, write_json
from ..io.data import format_prompt
from ..io.models import load_model_and_tokenizer
from .engine import Stage

FILES = ("skill_train", "skill_val", "skill_test", "knowledge_train", "knowledge_val", "knowledge_test",
         "known_facts", "known_val", "known_protect", "general")
#: the configuration key each file fills when ``palora demo`` or ``palora compare`` points there
DATA_KEYS = {"skill_train": "data.skill_train", "skill_val": "data.skill_val", "skill_test": "data.skill_eval",
             "knowledge_train": "data.knowledge_train", "knowledge_val": "data.knowledge_val",
             "knowledge_test": "data.knowledge_eval", "known_facts": "data.known_eval",
             "known_val": "data.known_val"}
GENERAL_TOKENS = 48  # longest continuation of a general-text opening
#: what the model already knows, for the methods to keep (``probe.keep_data``, in this order)
KEEP_FILES = ("general", "known_protect")

STAGE = Stage("data", inputs=lambda cfg: {"data_gen": to_dict(cfg.data_gen), "model": to_dict(cfg.model)},
              upstream=lambda cfg: [], outputs=lambda rd: [rd.data])


def data_files(folder: Path) -> dict[str, str]:
    """``{config key: path}`` of the demo's files in ``folder``."""
    return {key: str(folder / f"{name}.jsonl") for name, key in DATA_KEYS.items()}


def keep_override(folder: Path) -> str:
    """The ``--set`` that points ``probe.keep_data`` at :data:`KEEP_FILES` in ``folder`` (a later
    ``--set probe.keep_data=[]`` undoes it)."""
    return "probe.keep_data=" + ",".join(str(folder / f"{name}.jsonl") for name in KEEP_FILES)


def demo_data(spec: DataSpec) -> dict[str, list[dict[str, Any]]]:
    """The lines of every file but the model's (``known_facts`` unfiltered and unsplit, no
    ``known_protect``, no ``general``), keyed by file name without suffix."""
    skill = skill_splits(SKILL_TASKS[spec.skill_task], spec.n_skill_train, spec.n_skill_val,
                         spec.n_skill_test, spec.seed)
    knowledge = biography_splits(spec.n_people, spec.seed, spec.qa_share, spec.attributes,
                                 spec.fact_question or QUESTION)
    return {
        **{f"skill_{split}": rows for split, rows in skill.items()},
        **{f"knowledge_{split}": knowledge[split] for split in ("train", "val", "test")},
        "known_facts": candidate_facts(spec.known_relations, spec.known_prompt),
    }


def keep_known(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], batch_size: int, *,
               chat_template: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """The ``items`` the model answers right (greedy, ``MAX_NEW_TOKENS`` tokens, ``contains``), in order."""
    prompts = [format_prompt(tokenizer, it["prompt"], chat_template) for it in items]
    outputs = generate(model, tokenizer, prompts, MAX_NEW_TOKENS, batch_size, desc="known facts",
                       progress=progress)
    return [it for it, out in zip(items, outputs) if check_contains(out, it["answer"], it.get("aliases", ()))]


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
                f"the model answers none of the {candidates} known facts ({', '.join(spec.known_relations)}; "
                f"capitals asked as {spec.known_prompt!r}){' in its chat template' if chat_template else ''}; "
                "try another known_prompt (e.g. 'The capital of {country} is') or the chat template"
            )
    known = rows["known_facts"]
    protect, rows["known_val"], rows["known_facts"] = split_known(known, spec.known_protect_share,
                                                                  spec.known_val_share, spec.seed)
    rows["known_protect"] = protect_lines(protect)
    rows["general"] = [] if model is None else general_lines(
        sample(model, tokenizer, OPENINGS, spec.general_per_opening, spec.seed, GENERAL_TOKENS), spec.general_per_opening)
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
        "known_facts": {"candidates": candidates, "kept": len(known), "filtered_by_model": model is not None,
                        "kept_by_relation": {r: sum(it["relation"] == r for it in known) for r in spec.known_relations},
                        "protect": len(rows["known_protect"]), "val": len(rows["known_val"]),
                        "held_out": len(rows["known_facts"])},
        "general": {"lines": len(rows["general"]), "sampled_by_model": model is not None},
        "files": files,
    })
    return paths


def run_data(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    """``palora data``: the files into ``rd``; known facts are filtered with ``cfg.model``, prompted
    as the evaluation will prompt them."""
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer(cfg.model)
    files = write_demo_data(rd.root, cfg.data_gen, model=model, tokenizer=tok, batch_size=cfg.eval.batch_size,
                            chat_template=cfg.data.chat_template, progress=progress)
    return {"files": {k: str(v) for k, v in files.items()}, "wall_time_s": round(time.perf_counter() - start, 2)}


def check_skill_checker(cfg: RunConfig) -> None:
    """The generated skill data are scored by their task's checker: refuse another one (one line),
    e.g. a spelling task left on the default numeric checker."""
    task = SKILL_TASKS.get(cfg.data_gen.skill_task)
    if task is not None and task.checker != cfg.data.skill_checker:
        raise ConfigError(f"data_gen.skill_task={cfg.data_gen.skill_task} is checked by {task.checker!r}, "
                          f"data.skill_checker is {cfg.data.skill_checker!r}: add --set data.skill_checker={task.checker}")
