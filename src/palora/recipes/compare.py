"""``palora compare``: every baseline and ablation on the same experts, budget and data.

Per seed one SVF expert (``<out>/seed<N>/``, an ordinary run directory: ``palora svf`` resumes
and skips it the same way). Then, in this order, each step appending one row to
``<out>/compare.jsonl`` (a killed comparison continues where it stopped):

1. **grid** (first seed): every method at every learning rate of its grid (``compare.lr_grid``
   for adapters, ``compare.full_lr_grid`` for ``full-mlp``), evaluated on the validation splits
   (``data.skill_val``, ``data.knowledge_val``) and on the test splits;
2. **choice**: per method the rate with the best validation score (``compare.select``); the
   test splits play no part in it;
3. **seeds**: the other seeds, each method at its chosen rate, evaluated on the test splits;
4. **budget**: for ``compare.budget_methods``, the protected share swept over
   ``compare.budget_fractions`` at the chosen rate (``compare.budget_seeds``), test splits;
   share 0 is plain LoRA at the same rate (on the first seed, the grid's row).

The table (``compare.md``, ``compare.json``, with the learning-rate grid on the first seed's
validation splits) and the plots (``plots/tradeoff.png``, ``plots/budget.png``, ``plots/grid.png``)
are rewritten after every row. Each row records a digest of the settings
it depends on; rows of other settings are left in the file and ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import set_seed

from ..artifacts import RunDir, atomic_path, load_svf_expert, write_json
from ..comparison import (
    CPU_PEAK,
    CUDA_PEAK,
    SCORE_RULES,
    budget_curves,
    budget_markdown,
    choose_lr,
    grid_lines,
    grid_markdown,
    markdown,
    plot_budget,
    plot_grid,
    plot_tradeoff,
    seeds_label,
    summarize,
    with_retention,
)
from ..config import RunConfig, save, to_dict
from ..data import EvalExample, TrainCollator, load_eval, load_train, tokenize_train
from ..errors import ConfigError, PaloraError
from ..evaluation import evaluate
from ..memory import MemProbe
from ..methods import METHODS, build_method, merged
from ..methods.protect import covariance_subspaces, probe_subspaces, same_budget_indices, singular_subspaces
from ..models import load_model, load_tokenizer
from ..orthogonal import bake_projections, certificate, lora_delta
from ..subspace import Subspace
from ..targets import find_targets
from ..training import train
from .common import require
from .data import check_skill_checker, run_data
from .probe import skill_batches
from .run_state import file_digest, open_run
from .svf import run_svf

#: the demo's data files, relative to the comparison's directory (``palora data`` writes them)
DATA_FILES = {
    "data.skill_train": "skill_train.jsonl",
    "data.skill_val": "skill_val.jsonl",
    "data.skill_eval": "skill_test.jsonl",
    "data.knowledge_train": "knowledge_train.jsonl",
    "data.knowledge_val": "knowledge_val.jsonl",
    "data.knowledge_eval": "knowledge_test.jsonl",
    "data.known_eval": "known_facts.jsonl",
}


@dataclass(frozen=True)
class Job:
    seed: int
    method: str
    lr: float | None  # None: svf (nothing trained)
    fraction: float | None  # None: the probe's own protected share
    phase: str  # grid | seeds | budget

    def key(self) -> tuple:
        return (self.seed, self.method, self.lr, self.fraction)


#: settings keys (per section) added after comparisons were begun: dropped from the digest when unset
_LATER_KEYS = {"svf": ("init_from",), "probe": ("skill_data",)}


def _section(cfg: Any, name: str) -> dict[str, Any]:
    """``cfg`` as a dict without the later keys of section ``name`` that are unset (None or empty)."""
    later = _LATER_KEYS.get(name, ())
    return {k: v for k, v in to_dict(cfg).items() if not (k in later and v in (None, []))}


def settings_digest(cfg: RunConfig) -> str:
    """What every row depends on besides its own seed, method, rate and share."""
    d = cfg.data
    files = {k: file_digest(getattr(d, k)) for k in ("skill_train", "knowledge_train", "skill_val", "knowledge_val",
                                                      "skill_eval", "knowledge_eval", "known_eval")}
    inject = {k: v for k, v in to_dict(cfg.inject).items() if k not in ("methods", "train", "penalty_weight")}
    train = {k: v for k, v in to_dict(cfg.inject.train).items() if k not in ("lr", "log_every", "checkpoint_every")}
    # keys added after comparisons were begun, when unset, leave their digests alone
    tree = {"model": to_dict(cfg.model), "files": files, "svf": _section(cfg.svf, "svf"),
            "probe": _section(cfg.probe, "probe"),
            "inject": inject, "train": train, "penalty_weight": cfg.inject.penalty_weight,
            "eval": [cfg.eval.max_new_tokens, cfg.eval.limit], "text": [d.max_length, d.chat_template],
            "checkers": [d.skill_checker, d.knowledge_checker]}
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Rows:
    """``compare.jsonl``: the rows of this comparison's settings, appended one at a time."""

    def __init__(self, path: Path, settings: str):
        self.path, self.settings = path, settings
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        if lines and not _parses(lines[-1]):  # a row cut short by a kill: measured again
            lines = lines[:-1]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        every = [json.loads(line) for line in lines]
        self.rows = [r for r in every if r.get("settings") == settings]
        self.ignored = len(every) - len(self.rows)

    def has(self, job: Job) -> bool:
        return any(_key(r) == job.key() for r in self.rows)

    def add(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.append(row)


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _key(row: dict[str, Any]) -> tuple:
    return (row["seed"], row["method"], row["lr"], row["fraction"])


def grid_of(cfg: RunConfig, method: str) -> list[float | None]:
    family = METHODS[method].lr_family
    return {"none": [None], "full": cfg.compare.full_lr_grid, "svd-init": cfg.compare.svd_init_lr_grid,
            "adapter": cfg.compare.lr_grid}[family]


def plan(cfg: RunConfig, rows: list[dict[str, Any]]) -> tuple[list[Job], dict[str, float | None]]:
    """The jobs still possible to name now (later phases need the grid's choice) and that choice."""
    c = cfg.compare
    first = c.seeds[0]
    methods = list(dict.fromkeys(["svf", *c.methods]))  # retention needs the expert's own row
    # the grid's first rate for every method, then its second, ...: a partial grid is a whole table
    width = max(len(grid_of(cfg, m)) for m in methods)
    jobs = [Job(first, m, grid_of(cfg, m)[i], None, "grid") for i in range(width) for m in methods
            if i < len(grid_of(cfg, m))]
    scored = with_retention(rows)
    chosen = {m: (None if METHODS[m].lr_family == "none" else choose_lr(scored, m, first, c.select)) for m in methods}
    ready = [m for m in methods if METHODS[m].lr_family == "none" or chosen[m] is not None]
    jobs += [Job(s, m, chosen[m], None, "seeds") for s in c.seeds[1:] for m in ready]
    for s in c.budget_seeds:
        if s not in c.seeds:
            jobs.append(Job(s, "svf", None, None, "budget"))
        if s != first:  # share 0 is plain LoRA at each swept method's rate (the first seed's grid has them all)
            have = {chosen.get("lora")} if s in c.seeds else set()  # the seeds phase ran LoRA's own rate
            rates = sorted({chosen[m] for m in c.budget_methods if chosen.get(m) is not None} - have, reverse=True)
            jobs += [Job(s, "lora", lr, None, "budget") for lr in rates]
        for m in c.budget_methods:
            if chosen.get(m) is None:
                continue
            for f in c.budget_fractions:
                if f == 0:  # protecting nothing is plain LoRA
                    continue
                own = f == cfg.probe.fraction and cfg.probe.rule == "fraction" and s in c.seeds
                if not own:
                    jobs.append(Job(s, m, chosen[m], f, "budget"))
    return jobs, chosen


class Experts:
    """Per seed: the SVF expert (trained once, in its own run directory), its probe, its bases."""

    def __init__(self, cfg: RunConfig, root: Path, progress: bool):
        self.cfg, self.root, self.progress = cfg, root, progress
        self.subspaces: dict[tuple, tuple[dict[str, Subspace], dict]] = {}
        self.ready: dict[int, RunDir] = {}

    def config(self, seed: int) -> RunConfig:
        return dataclasses.replace(self.cfg, seed=seed, out=str(self.root / f"seed{seed}"))

    def run_dir(self, seed: int) -> RunDir:
        if seed not in self.ready:
            cfg, rd = self.config(seed), RunDir(self.root / f"seed{seed}")
            open_run(rd, cfg, overwrite=False)  # an expert made with other settings is refused, not reused
            rd.root.mkdir(parents=True, exist_ok=True)
            save(cfg, rd.config)
            run_svf(cfg, rd, self.progress)
            self.ready[seed] = rd
        return self.ready[seed]

    def load_expert(self, seed: int):
        return load_model(self.cfg.model, path=str(self.run_dir(seed).expert_model))

    def protected(self, seed: int, kind: str, cfg: RunConfig, tok) -> tuple[dict[str, Subspace], dict]:
        key = (seed, kind, cfg.probe.fraction)
        if key in self.subspaces:
            return self.subspaces[key]
        rd = self.run_dir(seed)
        if kind == "activation":
            result = covariance_subspaces(cfg, load_model(cfg.model, path=str(rd.expert_model)), tok)
        elif kind == "probe":
            state, meta = load_svf_expert(rd.svf_expert, None)
            result = probe_subspaces(cfg, load_model(cfg.model), state, meta["parametrization"],
                                     load_model(cfg.model, path=str(rd.expert_model)), tok)
        else:  # as many components per matrix as the probe protects: the top ones or random ones
            counts = {n: s.k for n, s in self.protected(seed, "probe", cfg, tok)[0].items()}
            targets = find_targets(load_model(cfg.model), cfg.model.target_modules)
            indices = same_budget_indices(counts, {t.name: min(t.shape) for t in targets}, kind, seed)
            result = (singular_subspaces(targets, indices), {"selected": sum(i.numel() for i in indices.values())})
        self.subspaces = {k: v for k, v in self.subspaces.items() if k[0] == seed}  # keep one seed's
        self.subspaces[key] = result
        return result


def job_config(cfg: RunConfig, job: Job) -> RunConfig:
    train = dataclasses.replace(cfg.inject.train, lr=job.lr) if job.lr is not None else cfg.inject.train
    probe = cfg.probe if job.fraction is None else dataclasses.replace(cfg.probe, rule="fraction", fraction=job.fraction)
    return dataclasses.replace(cfg, seed=job.seed, probe=probe, inject=dataclasses.replace(cfg.inject, train=train))


def evaluate_sets(model, tok, cfg: RunConfig, sets: dict[str, tuple[list[EvalExample], str]], progress: bool
                  ) -> dict[str, float]:
    out = {}
    for key, (examples, checker) in sets.items():
        r = evaluate(model, tok, examples, checker, chat_template=cfg.data.chat_template,
                     max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size, limit=cfg.eval.limit,
                     desc=key, progress=progress)
        out[key], out[f"n_{key}"] = r.accuracy, r.n
    return out


def run_job(job: Job, cfg: RunConfig, experts: Experts, tok, items, splits: dict, progress: bool) -> dict[str, Any]:
    spec = METHODS[job.method]
    jcfg = job_config(cfg, job)
    start = time.perf_counter()
    row: dict[str, Any] = {**dataclasses.asdict(job)}
    subspaces = None
    if spec.protect != "none":
        subspaces, stats = experts.protected(job.seed, spec.protect, jcfg, tok)
        row["protected"] = stats["selected"]
    set_seed(job.seed)
    expert = experts.load_expert(job.seed)
    model = expert
    if spec.trains:
        device = next(expert.parameters()).device
        memory = MemProbe(device)
        # CPU: the resident set the job adds above its start (the process keeps what earlier jobs
        # left, so its absolute peak is no method's number); CUDA: allocated tensors, model included
        floor = memory.current() if device.type != "cuda" else 0
        memory.reset_peak()
        targets = find_targets(expert, cfg.model.target_modules)
        built = build_method(spec, expert, targets, jcfg, subspaces, skill_batches=lambda: skill_batches(jcfg, tok))
        try:
            result = train(built.model, items, TrainCollator(tok.pad_token_id), jcfg.inject.train, seed=job.seed,
                           stage=f"{job.method} seed {job.seed} lr {job.lr:g}", progress=progress,
                           regularizer=built.regularizer)
        except PaloraError as e:  # e.g. a loss that diverged at this rate: recorded, never chosen
            row.update(failed=str(e), wall_time_s=round(time.perf_counter() - start, 2))
            return row
        row.update(trainable_parameters=result.trainable_parameters, train_time_s=round(result.wall_time_s, 2),
                   final_loss=result.final_loss, peak_memory_mb=round(max(memory.peak() - floor, 0) / 2**20, 1),
                   peak_memory_kind=CUDA_PEAK if device.type == "cuda" else CPU_PEAK)
        bake_projections(built.model)
        if subspaces is not None and not spec.penalty:
            side = spec.side or cfg.inject.side
            deltas = {t.name: lora_delta(built.model, t.name) for t in targets}
            ratios = [certificate(deltas[t.name], subspaces[t.name]) for t in targets]
            row["update_norm"] = float(sum(d.square().sum() for d in deltas.values()).sqrt())  # ‖ΔW‖ over all targets
            row["certificate"] = max(max(r[0] for r in ratios) if side in ("both", "out") else 0.0,
                                     max(r[1] for r in ratios) if side in ("both", "in") else 0.0)
        model = merged(built.model)
    model.eval()
    if job.phase == "grid":
        row["val"] = evaluate_sets(model, tok, jcfg, splits["val"], progress)
    row["test"] = evaluate_sets(model, tok, jcfg, splits["test"], progress)
    row["wall_time_s"] = round(time.perf_counter() - start, 2)
    return row


def eval_splits(cfg: RunConfig) -> dict[str, dict[str, tuple[list[EvalExample], str]]]:
    d = cfg.data
    sk, kc = d.skill_checker, d.knowledge_checker
    val = {"skill": (load_eval(require(d.skill_val, "data.skill_val", "--set data.skill_val=FILE"), sk), sk),
           "recall": (load_eval(require(d.knowledge_val, "data.knowledge_val", "--set data.knowledge_val=FILE"), kc),
                      kc)}
    test = {"skill": (load_eval(require(d.skill_eval, "data.skill_eval", "--skill-eval"), sk), sk),
            "recall": (load_eval(require(d.knowledge_eval, "data.knowledge_eval", "--knowledge-eval"), kc), kc)}
    if d.known_eval:
        test["known"] = (load_eval(d.known_eval, kc), kc)
    return {"val": val, "test": test}


def write_outputs(cfg: RunConfig, rd: RunDir, rows: list[dict[str, Any]], chosen: dict[str, float | None]) -> dict:
    scored = with_retention(rows)
    methods = list(dict.fromkeys(["svf", *cfg.compare.methods]))
    table = summarize(scored, methods, chosen)
    curves = budget_curves(scored, cfg.compare.budget_methods, cfg.probe.fraction, chosen, cfg.compare.budget_seeds)
    grid = grid_lines(scored, methods, cfg.compare.seeds[0], cfg.compare.select, chosen)
    result = {"table": table, "chosen_lr": chosen, "select": cfg.compare.select, "budget": curves,
              "grid": grid, "rows": len(rows)}
    write_json(rd.root / "compare.json", result)
    with atomic_path(rd.root / "compare.md") as tmp:
        tmp.write_text(
            f"# palora compare: {cfg.model.name}\n\nTest splits, mean ± std over seeds (sample std), each method at "
            f"the learning rate chosen on the validation splits of seed {cfg.compare.seeds[0]} "
            f"(rule: {cfg.compare.select}). Peak MB: on CPU the resident memory a job added above its start, on CUDA "
            f"the peak of allocated tensors, model included.\n\n" + markdown(table)
            + f"\n## Learning-rate grid (validation splits, seed {cfg.compare.seeds[0]})\n\nScore "
            f"({cfg.compare.select}): {SCORE_RULES[cfg.compare.select]}; ties go to the smaller rate.\n\n"
            + grid_markdown(grid)
            + f"\n## Protected budget (test splits, {seeds_label(cfg.compare.budget_seeds)})\n\n"
            f"Each method at its chosen rate, the share of components protected per matrix swept; share 0 is "
            f"plain LoRA at the same rate. Only these seeds count at every share.\n\n" + budget_markdown(curves),
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
    if cfg.data.skill_train and Path(cfg.data.skill_train).parent == rd.data and not Path(cfg.data.skill_train).is_file():
        run_data(cfg, RunDir(rd.data), progress)


def run_compare(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    if cfg.probe.skill_data or cfg.probe.extra_runs:
        raise ConfigError("palora compare probes one skill (data.skill_train): probe.skill_data and "
                          "probe.extra_runs are for palora probe / palora run")
    _prepare_data(cfg, rd, progress)
    splits = eval_splits(cfg)  # bad evaluation files are refused before any training
    knowledge = load_train(require(cfg.data.knowledge_train, "data.knowledge_train", "--knowledge-train"))
    require(cfg.data.skill_train, "data.skill_train", "--skill-train")
    rows = Rows(rd.root / "compare.jsonl", settings_digest(cfg))
    if rows.ignored:
        print(f"compare: {rows.ignored} rows of {rows.path} were made with other settings and are ignored")
    experts = Experts(cfg, rd.root, progress)
    tok = None
    items = None
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
        row["settings"] = rows.settings
        rows.add(row)
        _say(row)
        write_outputs(cfg, rd, rows.rows, plan(cfg, rows.rows)[1])
    jobs, chosen = plan(cfg, rows.rows)
    result = write_outputs(cfg, rd, rows.rows, chosen)
    print(f"compare: {len(rows.rows) - done_before} rows run now, {len(rows.rows)} in {rows.path}")
    return result


def _say(row: dict[str, Any]) -> None:
    if "failed" in row:
        print(f"  {row['method']} seed {row['seed']}: failed: {row['failed']}", flush=True)
        return
    parts = [f"{split} skill {row[split]['skill']:.3f} recall {row[split]['recall']:.3f}"
             for split in ("val", "test") if split in row]
    print(f"  {row['method']} seed {row['seed']}: " + ", ".join(parts) + f" ({row['wall_time_s']:.0f} s)", flush=True)

