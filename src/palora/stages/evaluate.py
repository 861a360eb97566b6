"""The ``eval`` stage (``palora eval``): skill accuracy and fact recall of the base, the expert and
every injected model, by greedy generation (:mod:`palora.evaluation`); ``report.json``,
``report.md``, the plots and the model card (``README.md``).

Generation runs on the main process alone (the other ranks wait and return no rows).
"""

from __future__ import annotations

import json
import time

from peft import PeftModel
from safetensors import safe_open

from ..config import RunConfig, to_dict
from ..errors import ArtifactError, FingerprintError
from ..evaluation import EvalSet, evaluate_sets, evaluation_sets, retention
from ..integrations import lm_eval
from ..io.artifacts import RunDir, atomic_path, check_adapter
from ..io.models import hub_id, load_model, load_model_and_tokenizer, load_tokenizer
from ..protection import start_model, target_fingerprint
from ..report.model_card import DATA_ROLES, model_card
from ..report.write import write_report
from ..training.distributed import barrier, is_main
from . import inject, svf
from .engine import Stage, data_file, file_digest, is_done, read_stages, record, text_inputs

#: the evaluation files of a run, by their ``data.*`` key
EVAL_FILES = ("skill_eval", "knowledge_eval", "known_eval")


def scoring_inputs(cfg: RunConfig, files: tuple[str, ...]) -> dict:
    """What a score depends on besides the model and the generation settings: the checkers, the text
    settings and the ``data.*`` files ``files`` by their bytes (the eval stage; ``palora compare``)."""
    d = cfg.data
    return {"checkers": [d.skill_checker, d.knowledge_checker], **{k: file_digest(getattr(d, k)) for k in files},
            **text_inputs(cfg)}


STAGE = Stage(
    "eval",
    inputs=lambda cfg: {**scoring_inputs(cfg, EVAL_FILES), "eval": to_dict(cfg.eval), "model": to_dict(cfg.model),
                        "methods": cfg.inject.methods},
    upstream=lambda cfg: [svf.STAGE, *[inject.stage_for(m) for m in cfg.inject.methods]],
    outputs=lambda rd: [rd.report_json, rd.report_md, rd.model_card, rd.plots, rd.evaluations],
    leaves=lambda rd: [rd.report_json],
)


def load_eval_sets(cfg: RunConfig, progress: bool = True) -> tuple[dict[str, EvalSet], lm_eval.LmEvalTasks | None]:
    """Every evaluation file, each answer readable by its checker (``FILE:LINE`` errors otherwise),
    and the lm-eval tasks of ``eval.lm_eval_tasks`` (unknown names, unreachable data sets refused).

    Reads no model: ``palora run`` calls it before training, so that a bad evaluation file fails in
    a second rather than after the training.
    """
    sets = evaluation_sets(cfg)  # the files first: reading them takes a second, lm-eval's tasks longer
    return sets, lm_eval.load_tasks(cfg.eval, progress) if cfg.eval.lm_eval_tasks else None


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


def load_method(cfg: RunConfig, rd: RunDir, method: str, step: int | None = None):
    """The merged model of ``method``, or the model its injection started from (the expert, with
    ``inject.protect_adapter`` merged when set) with its adapter merged (checked by :func:`check_run`);
    with ``step``, its snapshot of that step instead (``inject.snapshot_every``), checked here."""
    if step is not None:
        start = start_model(cfg, rd).model
        folder = rd.snapshot(method, step)
        if not folder.is_dir():
            raise ArtifactError(f"{folder} does not exist: the snapshots of {method} are at steps "
                                f"{rd.snapshot_steps(method) or 'none'} (inject.snapshot_every)")
        check_adapter(folder, target_fingerprint(start, cfg))
        return PeftModel.from_pretrained(start, str(folder)).merge_and_unload()
    merged = rd.merged_model(method)
    if merged.is_dir():
        return load_model(cfg.model, path=str(merged))
    return PeftModel.from_pretrained(start_model(cfg, rd).model, str(rd.adapter(method))).merge_and_unload()


def _save_outputs(rd: RunDir, name: str, kind: str, examples, result) -> None:
    path = rd.evaluations / f"{name}.{kind}.jsonl"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ex, out, ok in zip(examples, result.outputs, result.correct):
            prompt = [t.as_dict() for t in ex.prompt] if isinstance(ex.prompt, tuple) else ex.prompt
            f.write(json.dumps({"prompt": prompt, "answer": ex.answer, "output": out, "correct": ok}) + "\n")


def run_eval(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    if is_done(rd, cfg, STAGE):
        print(f"eval: already done in {rd.root}, skipped")
        return json.loads(rd.report_json.read_text(encoding="utf-8"))["rows"]
    rows = _evaluate(cfg, rd, progress) if is_main() else []
    barrier()
    return rows


def _evaluate(cfg: RunConfig, rd: RunDir, progress: bool) -> list[dict]:
    begin = time.perf_counter()
    sets, lm_tasks = load_eval_sets(cfg, progress)
    stages = read_stages(rd)
    methods = [m for m in cfg.inject.methods if f"inject:{m}" in stages]
    check_run(cfg, rd, methods)
    lm_scores: dict[str, dict] = {}
    rows: list[dict] = []
    for name in ["base", "expert", *methods]:
        start = time.perf_counter()
        if name == "base":
            model, tok = load_model_and_tokenizer(cfg.model)
            _check_base(cfg, rd, model, stages)
        else:
            tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
            model = load_model(cfg.model, path=str(rd.expert_model)) if name == "expert" else load_method(cfg, rd, name)
        scores = evaluate_sets(model, tok, sets, cfg, desc=f"eval {name}", progress=progress)
        for kind, result in scores.items():
            _save_outputs(rd, name, kind, sets[kind][0], result)
        s, k = scores["skill"], scores["knowledge"]
        stage = stages.get("svf" if name == "expert" else f"inject:{name}", {})
        row = {"name": name, "seed": cfg.seed, "skill_accuracy": s.accuracy, "skill_stderr": s.stderr,
               "knowledge_recall": k.accuracy, "knowledge_stderr": k.stderr, "retention": None, "n_skill": s.n,
               "n_knowledge": k.n, "trainable_parameters": stage.get("trainable_parameters", 0),
               "train_time_s": stage.get("wall_time_s")}
        if s.mistakes is not None:
            row["skill_mistakes"] = s.mistakes
        if "known" in scores:
            row.update(known_recall=scores["known"].accuracy, known_stderr=scores["known"].stderr)
        row["eval_time_s"] = round(time.perf_counter() - start, 2)
        if lm_tasks is not None:
            start = time.perf_counter()
            lm_scores[name] = lm_eval.score(lm_tasks, model, tok, quiet=not progress)
            row["lm_eval_time_s"] = round(time.perf_counter() - start, 2)
        rows.append(row)
    expert = next(r for r in rows if r["name"] == "expert")
    for r in rows:
        r["retention"] = retention(r["skill_accuracy"], expert["skill_accuracy"])
        if "known" in sets:  # against the base model, which knew them all, and against the expert
            r["known_retention"] = retention(r["known_recall"], rows[0]["known_recall"])
            r["known_of_expert"] = retention(r["known_recall"], expert["known_recall"])
    info = {"rows": len(rows), "wall_time_s": round(time.perf_counter() - begin, 2)}
    if lm_tasks is not None:
        info["lm_eval_version"] = lm_tasks.version
    record(rd, cfg, STAGE, info)
    write_report(rd, rows, read_stages(rd), cfg, lm_eval=lm_scores if lm_tasks is not None else None)
    write_model_card(cfg, rd, rows)
    return rows


def write_model_card(cfg: RunConfig, rd: RunDir, rows: list[dict]) -> None:
    """``README.md`` (:mod:`palora.report.model_card`), with the data files' line counts and sha256 and
    the target matrices named in ``svf_expert.safetensors`` (its header only is read)."""
    data = [f for key in DATA_ROLES if (f := data_file(key, getattr(cfg.data, key))) is not None]
    targets = []
    if rd.svf_expert.is_file():
        with safe_open(str(rd.svf_expert), framework="pt") as f:
            targets = [k.removesuffix(".z") for k in f.keys() if k.endswith(".z")]  # noqa: SIM118 - safe_open
    text = model_card(cfg, rows, read_stages(rd), data, targets, hub_id(cfg.model.name))
    with atomic_path(rd.model_card) as tmp:
        tmp.write_text(text, encoding="utf-8")
