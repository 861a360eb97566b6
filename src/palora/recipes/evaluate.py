"""Evaluation: skill accuracy and fact recall of the base, the expert and every injected model."""

from __future__ import annotations

import json
import time

from peft import PeftModel

from ..artifacts import RunDir, atomic_path, check_adapter
from ..config import RunConfig
from ..data import load_eval
from ..errors import ArtifactError
from ..evaluation import EvalResult, evaluate, retention
from ..models import load_model, load_model_and_tokenizer, load_tokenizer
from ..report import write_report
from .common import ensure_dir, read_stages, record_stage, require, target_fingerprint


def _load_method(cfg: RunConfig, rd: RunDir, method: str):
    merged = rd.merged_model(method)
    if merged.is_dir():
        return load_model(cfg.model, path=str(merged))
    adapter = rd.adapter(method)
    if not adapter.is_dir():
        raise ArtifactError(f"method {method} has neither {merged} nor {adapter}: run `palora inject` first")
    expert = load_model(cfg.model, path=str(rd.expert_model))
    check_adapter(adapter, target_fingerprint(expert, cfg))
    return PeftModel.from_pretrained(expert, str(adapter)).merge_and_unload()


def _save_outputs(rd: RunDir, name: str, kind: str, examples, result: EvalResult) -> None:
    path = ensure_dir(rd.evaluations) / f"{name}.{kind}.jsonl"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ex, out, ok in zip(examples, result.outputs, result.correct):
            f.write(json.dumps({"prompt": ex.prompt, "answer": ex.answer, "output": out, "correct": ok}) + "\n")


def run_eval(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    begin = time.perf_counter()
    skill = load_eval(require(cfg.data.skill_eval, "data.skill_eval", "--skill-eval"))
    facts = load_eval(require(cfg.data.knowledge_eval, "data.knowledge_eval", "--knowledge-eval"))
    known = load_eval(cfg.data.known_eval) if cfg.data.known_eval else None
    stages = read_stages(rd)
    names = ["base", "expert", *[m for m in cfg.inject.methods if f"inject:{m}" in stages]]
    e = cfg.eval
    rows: list[dict] = []
    for name in names:
        start = time.perf_counter()
        if name == "base":
            model, tok = load_model_and_tokenizer(cfg.model)
        else:
            if not rd.expert_model.is_dir():
                raise ArtifactError(f"{rd.expert_model} does not exist: run `palora svf --out {rd.root}` first")
            tok = load_tokenizer(str(rd.expert_model))
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
        rows.append(row)
    expert = next(r for r in rows if r["name"] == "expert")
    for r in rows:
        r["retention"] = retention(r["skill_accuracy"], expert["skill_accuracy"])
        if known is not None:  # old facts are measured against the base model, which knew them all
            r["known_retention"] = retention(r["known_recall"], rows[0]["known_recall"])
    record_stage(rd, "eval", {"rows": len(rows), "wall_time_s": round(time.perf_counter() - begin, 2)})
    write_report(rd, rows, read_stages(rd), cfg)
    return rows
