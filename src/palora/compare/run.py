"""``palora compare``: every baseline and ablation on the same experts, budget and data.

Per seed one SVF expert (:mod:`.experts`); then the jobs of :mod:`.plan` in order, each trained
through the one injection path (:mod:`palora.injection`), scored through the one evaluation path
(:mod:`palora.evaluation`) and appended as a row to ``<out>/compare.jsonl`` (:mod:`.rows`), so a
killed comparison continues where it stopped. The table (``compare.md``, ``compare.json``, with
the learning-rate grid on the first seed's validation splits) and the plots
(``plots/tradeoff.png``, ``plots/budget.png``, ``plots/grid.png``) are rewritten after every row.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from transformers import set_seed

from ..config import RunConfig, require
from ..errors import ConfigError, PaloraError
from ..evaluation import EvalSet, evaluate_sets, evaluation_sets
from ..injection import certified, inject, merged
from ..io.artifacts import RunDir, atomic_path, write_json
from ..io.data import load_train, tokenize_train
from ..io.models import load_tokenizer
from ..methods.registry import METHODS
from ..protection import own_side, skill_batches
from ..replay import check_replay, with_replay
from ..report.tables import mistakes_table
from ..stages.data import check_skill_checker, run_data
from ..training.memory import MemProbe
from .experts import Experts
from .plan import Job, plan
from .plots import plot_budget, plot_grid, plot_tradeoff
from .rows import Rows, job_config
from .table import (
    CPU_PEAK,
    CUDA_PEAK,
    SCORE_RULES,
    budget_curves,
    budget_markdown,
    grid_lines,
    grid_markdown,
    markdown,
    seeds_label,
    summarize,
    with_retention,
)

#: a row's name for each evaluation set
ROW_KEYS = {"skill": "skill", "knowledge": "recall", "known": "known"}


def _scores(model, tok, sets: dict[str, EvalSet], cfg: RunConfig, progress: bool) -> dict[str, Any]:
    out = {}
    for name, r in evaluate_sets(model, tok, sets, cfg, desc="compare", progress=progress).items():
        out[ROW_KEYS[name]], out[f"n_{ROW_KEYS[name]}"] = r.accuracy, r.n
        if r.mistakes is not None:
            out[f"{ROW_KEYS[name]}_mistakes"] = r.mistakes
    return out


def run_job(job: Job, cfg: RunConfig, experts: Experts, tok, items, splits: dict[str, dict[str, EvalSet]],
            progress: bool) -> dict[str, Any]:
    method = METHODS[job.method]
    jcfg = job_config(cfg, job)
    start = time.perf_counter()
    row: dict[str, Any] = {**dataclasses.asdict(job)}
    subspaces = experts.protected(method, jcfg)
    if subspaces is not None:
        row["protected"] = sum(s.k for s in subspaces.values())
    set_seed(job.seed)
    model = experts.load_expert(job.seed)
    if method.trains:
        device = next(model.parameters()).device
        memory = MemProbe(device)
        # CPU: the resident set the job adds above its start (the process keeps what earlier jobs
        # left, so its absolute peak is no method's number); CUDA: allocated tensors, model included
        floor = memory.current() if device.type != "cuda" else 0
        memory.reset_peak()
        peak: list[int] = []  # read when the training ends, before bake and certificate
        side = own_side(method, cfg)
        try:
            done = inject(method, model, with_replay(job.method, jcfg, items, tok), tok.pad_token_id, jcfg, subspaces, side,
                          reload=lambda: experts.load_expert(job.seed), stage=f"{job.method} seed {job.seed} lr {job.lr:g}",
                          skill_batches=lambda: skill_batches(jcfg, tok), progress=progress,
                          trained_hook=lambda: peak.append(memory.peak()))
        except PaloraError as e:  # e.g. a loss that diverged at this rate: recorded, never chosen
            row.update(failed=str(e), wall_time_s=round(time.perf_counter() - start, 2))
            return row
        info = done.info
        row.update(trainable_parameters=info["trainable_parameters"], train_time_s=info["train_time_s"],
                   final_loss=info["final_loss"], peak_memory_mb=round(max(peak[0] - floor, 0) / 2**20, 1),
                   peak_memory_kind=CUDA_PEAK if device.type == "cuda" else CPU_PEAK)
        if "certificate_out" in info:  # a projected update: certified on the sides the method protects
            row.update(update_norm=info["update_norm"], certificate=certified(info, side))
        model = merged(done.model)
    model.eval()
    if job.phase == "grid":
        row["val"] = _scores(model, tok, splits["val"], jcfg, progress)
    row["test"] = _scores(model, tok, splits["test"], jcfg, progress)
    row["wall_time_s"] = round(time.perf_counter() - start, 2)
    return row


def write_outputs(cfg: RunConfig, rd: RunDir, rows: list[dict[str, Any]], chosen: dict[str, float | None]) -> dict:
    scored = with_retention(rows)
    methods = list(dict.fromkeys(["svf", *cfg.compare.methods]))
    table = summarize(scored, methods, chosen)
    curves = budget_curves(scored, cfg.compare.budget_methods, cfg.probe.fraction, chosen, cfg.compare.budget_seeds)
    grid = grid_lines(scored, methods, cfg.compare.seeds[0], cfg.compare.select, chosen)
    result = {"table": table, "chosen_lr": chosen, "select": cfg.compare.select, "budget": curves,
              "grid": grid, "rows": len(rows)}
    write_json(rd.root / "compare.json", result)
    budget = ""  # no sweep asked (compare.budget_methods or compare.budget_seeds empty): no section
    if cfg.compare.budget_methods and cfg.compare.budget_seeds:
        budget = (f"\n## Protected budget (test splits, {seeds_label(cfg.compare.budget_seeds)})\n\n"
                  f"Each method at its chosen rate, the share of components protected per matrix swept; share 0 is "
                  f"plain LoRA at the same rate. Only these seeds count at every share.\n\n" + budget_markdown(curves))
    with atomic_path(rd.root / "compare.md") as tmp:
        tmp.write_text(
            f"# palora compare: {cfg.model.name}\n\nTest splits, mean ± std over seeds (sample std), each method at "
            f"the learning rate chosen on the validation splits of seed {cfg.compare.seeds[0]} "
            f"(rule: {cfg.compare.select}). Peak MB: on CPU the resident memory a job added above its start, on CUDA "
            f"the peak of allocated tensors, model included.\n\n" + markdown(table)
            + mistakes_table([(t["method"], t.get("skill_mistakes"), t.get("n_skill", 0)) for t in table])
            + f"\n## Learning-rate grid (validation splits, seed {cfg.compare.seeds[0]})\n\nScore "
            f"({cfg.compare.select}): {SCORE_RULES[cfg.compare.select]}; ties go to the smaller rate.\n\n"
            + grid_markdown(grid) + budget,
            encoding="utf-8")
    rd.plots.mkdir(parents=True, exist_ok=True)
    plot_tradeoff(table, rd.plots / "tradeoff.png")
    plot_grid(grid, rd.plots / "grid.png", [t["method"] for t in table])
    if any(curves.values()):
        plot_budget(curves, rd.plots / "budget.png", cfg.compare.budget_seeds)
    return result


def _prepare_data(cfg: RunConfig, rd: RunDir, progress: bool) -> None:
    """With the shipped config the demo's data sets are written into ``<out>/data/`` once."""
    if cfg.data.skill_train and Path(cfg.data.skill_train).parent == rd.data:
        check_skill_checker(cfg)
        if not Path(cfg.data.skill_train).is_file():
            run_data(cfg, RunDir(rd.data), progress)


def run_compare(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    if cfg.probe.skill_data or cfg.probe.extra_runs:
        raise ConfigError("palora compare probes one skill (data.skill_train): probe.skill_data and "
                          "probe.extra_runs are for palora probe / palora run")
    check_replay(cfg, cfg.compare.methods)
    _prepare_data(cfg, rd, progress)
    splits = {split: evaluation_sets(cfg, split) for split in ("val", "test")}  # bad files refused before training
    knowledge = load_train(require(cfg.data.knowledge_train, "data.knowledge_train", "--knowledge-train"))
    require(cfg.data.skill_train, "data.skill_train", "--skill-train")
    rows = Rows(rd.root / "compare.jsonl", cfg)
    if rows.ignored:
        print(f"compare: {rows.ignored} rows of {rows.path} were made with other settings and are ignored")
    with ExitStack() as locks:
        experts = Experts(cfg, rd.root, progress, locks)
        tok = items = None
        done_before = len(rows.rows)
        while True:
            jobs, chosen = plan(cfg, rows.rows)
            todo = [j for j in jobs if not rows.has(j)]
            if not todo:
                break
            job = todo[0]
            if tok is None:
                tok = load_tokenizer(str(experts.run_dir(cfg.compare.seeds[0]).expert_model),
                                     trust_remote_code=cfg.model.trust_remote_code)
                items = tokenize_train(knowledge, tok, cfg.data.max_length, cfg.data.chat_template)
            n_done = sum(rows.has(j) for j in jobs)
            lr = "" if job.lr is None else f" lr {job.lr:g}"
            share = "" if job.fraction is None else f" protected share {job.fraction:g}"
            print(f"compare [{n_done + 1}/{len(jobs)}+] {job.phase}: {job.method} seed {job.seed}{lr}{share}", flush=True)
            row = run_job(job, cfg, experts, tok, items, splits, progress)
            rows.add(row)
            _say(row)
            write_outputs(cfg, rd, rows.rows, plan(cfg, rows.rows)[1])
        result = write_outputs(cfg, rd, rows.rows, plan(cfg, rows.rows)[1])
    print(f"compare: {len(rows.rows) - done_before} rows run now, {len(rows.rows)} in {rows.path}")
    return result


def _say(row: dict[str, Any]) -> None:
    if "failed" in row:
        print(f"  {row['method']} seed {row['seed']}: failed: {row['failed']}", flush=True)
        return
    parts = [f"{split} skill {row[split]['skill']:.3f} recall {row[split]['recall']:.3f}"
             for split in ("val", "test") if split in row]
    print(f"  {row['method']} seed {row['seed']}: " + ", ".join(parts) + f" ({row['wall_time_s']:.0f} s)", flush=True)
