"""Evaluation: skill accuracy and fact recall of the base, the expert and every injected model."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from safetensors import safe_open

from .. import lm_eval_bridge
from ..artifacts import RunDir, atomic_path, check_adapter
from ..config import RunConfig
from ..data import EvalExample, load_eval
from ..distributed import barrier, is_main
from ..errors import ArtifactError, FingerprintError
from ..evaluation import EvalResult, evaluate, retention
from ..model_card import DATA_ROLES, DataFile, model_card
from ..models import hub_id, load_model, load_model_and_tokenizer, load_tokenizer
from ..report import write_report
from .common import ensure_dir, record_stage, require, target_fingerprint
from .inject import start_model
from .run_state import file_digest, is_done, read_stages, say_done


@dataclass(frozen=True)
class EvalSets:
    """The evaluation files of a run, read and checked, and its lm-eval tasks, found and tried."""

    skill: list[EvalExample]
    knowledge: list[EvalExample]
    known: list[EvalExample] | None
    lm_eval: lm_eval_bridge.LmEvalTasks | None


def load_eval_sets(cfg: RunConfig, progress: bool = True) -> EvalSets:
    """Every evaluation file, each answer readable by its checker (``FILE:LINE`` errors otherwise),
    and the lm-eval tasks of ``eval.lm_eval_tasks`` (unknown names, unreachable data sets refused).

    Reads no model: ``palora run`` can call it before training, so that a bad evaluation file
    fails in a second rather than after the training.
    """
    d = cfg.data
    return EvalSets(
        skill=load_eval(require(d.skill_eval, "data.skill_eval", "--skill-eval"), d.skill_checker),
        knowledge=load_eval(require(d.knowledge_eval, "data.knowledge_eval", "--knowledge-eval"),
                            d.knowledge_checker),
        known=load_eval(d.known_eval, d.knowledge_checker) if d.known_eval else None,
        lm_eval=lm_eval_bridge.load_tasks(cfg.eval, progress) if cfg.eval.lm_eval_tasks else None,
    )


def check_run(cfg: RunConfig, rd: RunDir, methods: list[str]) -> None:
    """Refuse, before anything is generated or written, a missing expert or method, or an adapter
    trained on another expert than ``expert_model/``."""
    if not rd.expert_model.is_dir():
        raise ArtifactError(f"{rd.expert_model} does not exist: run `palora svf --out {rd.root}` first")
    adapters = [m for m in methods if not rd.merged_model(m).is_dir()]
    for m in adapters:
        if not rd.adapter(m).is_dir():
            raise ArtifactError(
                f"method {m} has neither {rd.merged_model(m)} nor {rd.adapter(m)}: run `palora inject` first"
            )
    if adapters:  # made for the model the injection started from (with an earlier round merged, if any)
        expert_fp = target_fingerprint(start_model(cfg, rd).model, cfg)
        for m in adapters:
            check_adapter(rd.adapter(m), expert_fp)


def _check_base(cfg: RunConfig, rd: RunDir, model, stages: dict) -> None:
    """The base model evaluated must be the one the run's expert was trained from."""
    expected = stages.get("svf", {}).get("base_fingerprint")
    found = target_fingerprint(model, cfg)
    if expected is not None and found != expected:
        raise FingerprintError(
            f"{cfg.model.name} is not the base model of {rd.root} (fingerprint {found}, the expert was trained "
            f"from {expected}): pass the model `palora svf` used"
        )


def _load_method(cfg: RunConfig, rd: RunDir, method: str):
    """The merged model of ``method``, or the model its injection started from (the expert, with
    ``inject.protect_adapter`` merged when set) with its adapter merged (checked by :func:`check_run`)."""
    merged = rd.merged_model(method)
    if merged.is_dir():
        return load_model(cfg.model, path=str(merged))
    return PeftModel.from_pretrained(start_model(cfg, rd).model, str(rd.adapter(method))).merge_and_unload()


def _save_outputs(rd: RunDir, name: str, kind: str, examples, result: EvalResult) -> None:
    path = ensure_dir(rd.evaluations) / f"{name}.{kind}.jsonl"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ex, out, ok in zip(examples, result.outputs, result.correct):
            f.write(json.dumps({"prompt": ex.prompt, "answer": ex.answer, "output": out, "correct": ok}) + "\n")


def run_eval(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    """Generation on the main process alone (the other ranks wait and return no rows)."""
    if is_done(rd, cfg, "eval") and rd.report_json.is_file():
        say_done(rd, "eval")
        return json.loads(rd.report_json.read_text(encoding="utf-8"))["rows"]
    rows = _evaluate(cfg, rd, progress) if is_main() else []
    barrier()
    return rows


def _evaluate(cfg: RunConfig, rd: RunDir, progress: bool) -> list[dict]:
    begin = time.perf_counter()
    sets = load_eval_sets(cfg, progress)
    skill, facts, known, lm_tasks = sets.skill, sets.knowledge, sets.known, sets.lm_eval
    stages = read_stages(rd)
    methods = [m for m in cfg.inject.methods if f"inject:{m}" in stages]
    check_run(cfg, rd, methods)
    names = ["base", "expert", *methods]
    e = cfg.eval
    lm_scores: dict[str, dict] = {}
    rows: list[dict] = []
    for name in names:
        start = time.perf_counter()
        if name == "base":
            model, tok = load_model_and_tokenizer(cfg.model)
            _check_base(cfg, rd, model, stages)
        else:
            tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
            model = load_model(cfg.model, path=str(rd.expert_model)) if name == "expert" else _load_method(cfg, rd, name)
        common = dict(chat_template=cfg.data.chat_template, max_new_tokens=e.max_new_tokens,
                      batch_size=e.batch_size, limit=e.limit, progress=progress)
        s = evaluate(model, tok, skill, cfg.data.skill_checker, desc=f"eval {name}: skill", **common)
        k = evaluate(model, tok, facts, cfg.data.knowledge_checker, desc=f"eval {name}: facts", **common)
        _save_outputs(rd, name, "skill", skill, s)
        _save_outputs(rd, name, "knowledge", facts, k)
        stage = stages.get("svf" if name == "expert" else f"inject:{name}", {})
        row = {
            "name": name,
            "seed": cfg.seed,
            "skill_accuracy": s.accuracy,
            "skill_stderr": s.stderr,
            "knowledge_recall": k.accuracy,
            "knowledge_stderr": k.stderr,
            "retention": None,
            "n_skill": s.n,
            "n_knowledge": k.n,
            "trainable_parameters": stage.get("trainable_parameters", 0),
            "train_time_s": stage.get("wall_time_s"),
        }
        if known is not None:
            o = evaluate(model, tok, known, cfg.data.knowledge_checker, desc=f"eval {name}: known facts", **common)
            _save_outputs(rd, name, "known", known, o)
            row.update(known_recall=o.accuracy, known_stderr=o.stderr)
        row["eval_time_s"] = round(time.perf_counter() - start, 2)
        if lm_tasks is not None:
            start = time.perf_counter()
            lm_scores[name] = lm_eval_bridge.score(lm_tasks, model, tok)
            row["lm_eval_time_s"] = round(time.perf_counter() - start, 2)
        rows.append(row)
    expert = next(r for r in rows if r["name"] == "expert")
    for r in rows:
        r["retention"] = retention(r["skill_accuracy"], expert["skill_accuracy"])
        if known is not None:  # old facts are measured against the base model, which knew them all
            r["known_retention"] = retention(r["known_recall"], rows[0]["known_recall"])
    record = {"rows": len(rows), "wall_time_s": round(time.perf_counter() - begin, 2)}
    if lm_tasks is not None:
        record["lm_eval_version"] = lm_tasks.version
    record_stage(rd, cfg, "eval", record)
    write_report(rd, rows, read_stages(rd), cfg, lm_eval=lm_scores if lm_tasks is not None else None)
    write_model_card(cfg, rd, rows)
    return rows


def write_model_card(cfg: RunConfig, rd: RunDir, rows: list[dict]) -> None:
    """``README.md`` (:mod:`palora.model_card`), with the data files' line counts and sha256 and the
    target matrices named in ``svf_expert.safetensors`` (its header only is read)."""
    data = []
    for key in DATA_ROLES:
        path = getattr(cfg.data, key)
        if path and Path(path).is_file():
            with open(path, encoding="utf-8") as f:
                lines = sum(1 for line in f if line.strip())
            data.append(DataFile(key, path, lines, file_digest(path)))
    targets = []
    if rd.svf_expert.is_file():
        with safe_open(str(rd.svf_expert), framework="pt") as f:
            targets = [k.removesuffix(".z") for k in f.keys() if k.endswith(".z")]  # noqa: SIM118 - safe_open
    text = model_card(cfg, rows, read_stages(rd), data, targets, hub_id(cfg.model.name))
    with atomic_path(rd.model_card) as tmp:
        tmp.write_text(text, encoding="utf-8")
