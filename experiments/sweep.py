"""Injection variants on shared SVF experts, measured on the VALIDATION splits over several seeds.

    python experiments/sweep.py --data DATA_DIR --out OUT_DIR --seeds 0 1 2 \
        --variants experiments/variants.yaml [--set svf.train.steps=100 ...]

Per seed: one SVF expert (``OUT/seed<N>/``, reused when it is already there), then every variant
of ``variants.yaml`` (a list of ``{name, method: lora|palora, set: {key: value}}``) injects the
facts into that expert with the library's own components and is evaluated in memory on
``skill_val``, ``knowledge_val`` and ``known_facts``. One JSON line per (seed, variant) goes to
``OUT/results.jsonl``; ``experiments/summarize.py`` turns it into a table with standard errors.
The test splits are never read here: settings are chosen on validation only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from transformers import set_seed

from palora.config import resolve, save
from palora.core.orthogonal import add_lora, bake_projections, certificate, lora_delta
from palora.core.probe import DATA_SCORES, select_subspace
from palora.core.targets import find_targets
from palora.evaluation import evaluate
from palora.io.artifacts import RunDir, load_svf_expert
from palora.io.data import TrainCollator, load_eval, load_train, tokenize_train
from palora.io.models import load_model, load_tokenizer
from palora.protection import selection_rule, skill_statistics
from palora.stages.svf import run_svf
from palora.training.loop import train


def evaluate_all(model, tok, cfg, data: Path, progress: bool) -> dict:
    out = {}
    common = dict(chat_template=cfg.data.chat_template, max_new_tokens=cfg.eval.max_new_tokens,
                  batch_size=cfg.eval.batch_size, progress=progress)
    for key, file, checker in (("skill", "skill_val.jsonl", cfg.data.skill_checker),
                               ("recall", "knowledge_val.jsonl", cfg.data.knowledge_checker),
                               ("known", "known_facts.jsonl", cfg.data.knowledge_checker)):
        r = evaluate(model, tok, load_eval(data / file), checker, desc=key, **common)
        out[key], out[f"n_{key}"] = r.accuracy, r.n
    return out


def activation_subspaces(cfg, tok, rd, fraction: float) -> dict:
    """Input side only: the top ``fraction`` of eigenvectors of the skill's input covariance per
    target, through the expert (the library's ``act-protect``)."""
    from palora.core.covariance import activation_subspaces as from_covariance
    from palora.core.probe import SelectionRule
    from palora.core.statistics import input_covariance
    from palora.protection import skill_batches

    expert = load_model(cfg.model, path=str(rd.expert_model))
    targets = find_targets(expert, cfg.model.target_modules)
    cov = input_covariance(expert, skill_batches(cfg, tok), [t.name for t in targets], progress=False)
    subspaces, _ = from_covariance(cov, {t.name: t.shape[0] for t in targets}, SelectionRule("fraction", fraction))
    return subspaces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", type=Path, required=True)
    ap.add_argument("--only", nargs="*", help="run only these variant names")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    progress = not args.quiet
    variants = yaml.safe_load(args.variants.read_text())
    if args.only:
        variants = [v for v in variants if v["name"] in args.only]
    results = args.out / "results.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    done = set()
    if results.is_file():
        done = {(r["seed"], r["variant"]) for r in map(json.loads, results.read_text().splitlines())}

    for seed in args.seeds:
        flags = {"seed": seed, "data.skill_train": str(args.data / "skill_train.jsonl"),
                 "data.knowledge_train": str(args.data / "knowledge_train.jsonl"),
                 "out": str(args.out / f"seed{seed}")}
        base_cfg = resolve(None, args.overrides, flags)
        rd = RunDir(base_cfg.out)
        rd.root.mkdir(parents=True, exist_ok=True)
        if not rd.expert_model.is_dir():
            save(base_cfg, rd.config)
            run_svf(base_cfg, rd, progress)
        tok = load_tokenizer(str(rd.expert_model))
        if (seed, "expert") not in done:
            expert = load_model(base_cfg.model, path=str(rd.expert_model))
            row = {"seed": seed, "variant": "expert", **evaluate_all(expert, tok, base_cfg, args.data, progress)}
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
        state, meta = load_svf_expert(rd.svf_expert, None)

        for v in variants:
            if (seed, v["name"]) in done:
                continue
            start = time.perf_counter()
            cfg = resolve(None, args.overrides + [f"{k}={json.dumps(x)}" for k, x in v.get("set", {}).items()], flags)
            subspaces, spectrum = None, None
            if v["method"] == "act-protect":
                subspaces = activation_subspaces(cfg, tok, rd, v.get("fraction", 0.5))
            if v["method"] == "palora":
                base = load_model(cfg.model)
                stats = skill_statistics(cfg, state, meta["parametrization"], False) if cfg.probe.score in DATA_SCORES else None
                subspaces, spectrum = select_subspace(find_targets(base, cfg.model.target_modules), state,
                                                      meta["parametrization"], cfg.probe.score, selection_rule(cfg),
                                                      False, stats)
                del base
            set_seed(seed)
            expert = load_model(cfg.model, path=str(rd.expert_model))
            targets = find_targets(expert, cfg.model.target_modules)
            items = tokenize_train(load_train(cfg.data.knowledge_train), tok, cfg.data.max_length, cfg.data.chat_template)
            torch.manual_seed(seed)
            model = add_lora(expert, targets, cfg.inject.rank, cfg.inject.alpha, cfg.inject.dropout,
                             subspaces=subspaces, side=cfg.inject.side, soft=cfg.inject.soft)
            result = train(model, items, TrainCollator(tok.pad_token_id), cfg.inject.train, seed=seed,
                           stage=f"{v['name']} s{seed}", progress=progress)
            bake_projections(model)
            cert = None
            if subspaces:
                cert = max(max(certificate(lora_delta(model, t.name), subspaces[t.name])) for t in targets)
            merged = model.merge_and_unload()
            row = {"seed": seed, "variant": v["name"], "method": v["method"], "set": v.get("set", {}),
                   **evaluate_all(merged, tok, cfg, args.data, progress),
                   "final_loss": result.final_loss, "train_time_s": round(result.wall_time_s, 1),
                   "certificate": cert, "protected_fraction": None if spectrum is None else spectrum["fraction"],
                   "in_top_block": None if spectrum is None else spectrum["in_top_block"],
                   "wall_time_s": round(time.perf_counter() - start, 1)}
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
