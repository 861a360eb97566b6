"""Where does the forgetting live? Train one injection on an SVF expert, then give the expert's
weights back one group of matrices at a time and measure the skill on the validation split.

    python experiments/locate.py --data DATA_DIR --run OUT/seed0 [--variant lora|palora] [--set ...]

Groups: each kind of matrix (gate / up / down) and each third of the layers. Also prints, per
kind of matrix, how much the update moves the skill's own activations,
``‖ΔW X_skill‖_F / ‖W_z X_skill‖_F`` over skill-training inputs ``X_skill``.
Writes ``<run>/locate-<variant>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import torch
from transformers import set_seed

from palora.config import resolve
from palora.core.orthogonal import add_lora, bake_projections, lora_delta
from palora.core.probe import DATA_SCORES, select_subspace
from palora.core.targets import find_targets, set_weight_matrix, weight_matrix
from palora.evaluation import evaluate
from palora.io.artifacts import RunDir, load_svf_expert
from palora.io.data import TrainCollator, batches, load_eval, load_train, tokenize_train
from palora.io.models import load_model, load_tokenizer
from palora.protection import selection_rule, skill_statistics
from palora.training.loop import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="a sweep.py seed folder holding an SVF expert")
    ap.add_argument("--variant", choices=["lora", "palora"], default="lora")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    rd = RunDir(args.run)
    flags = {"data.skill_train": str(args.data / "skill_train.jsonl"),
             "data.knowledge_train": str(args.data / "knowledge_train.jsonl")}
    cfg = resolve(rd.config if rd.config.is_file() else None, args.overrides, flags)
    tok = load_tokenizer(str(rd.expert_model))
    subspaces = None
    if args.variant == "palora":
        state, meta = load_svf_expert(rd.svf_expert, None)
        stats = skill_statistics(cfg, state, meta["parametrization"], False) if cfg.probe.score in DATA_SCORES else None
        base = load_model(cfg.model)
        subspaces, _ = select_subspace(find_targets(base, cfg.model.target_modules), state, meta["parametrization"],
                                       cfg.probe.score, selection_rule(cfg), False, stats)
    set_seed(cfg.seed)
    expert = load_model(cfg.model, path=str(rd.expert_model))
    targets = find_targets(expert, cfg.model.target_modules)
    torch.manual_seed(cfg.seed)
    model = add_lora(expert, targets, cfg.inject.rank, cfg.inject.alpha, subspaces=subspaces, side=cfg.inject.side)
    items = tokenize_train(load_train(cfg.data.knowledge_train), tok, cfg.data.max_length, cfg.data.chat_template)
    train(model, items, TrainCollator(tok.pad_token_id), cfg.inject.train, seed=cfg.seed, stage=args.variant)
    bake_projections(model)
    deltas = {t.name: lora_delta(model, t.name) for t in targets}

    # activations of the skill through the expert: ‖ΔW X‖ / ‖W X‖ per kind of matrix
    fresh = load_model(cfg.model, path=str(rd.expert_model))
    ftargets = find_targets(fresh, cfg.model.target_modules)
    skill_items = tokenize_train(load_train(cfg.data.skill_train), tok, cfg.data.max_length, cfg.data.chat_template)
    num, den = defaultdict(float), defaultdict(float)

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            kind = name.rpartition(".")[2]
            num[kind] += float(((x @ deltas[name].T) ** 2).sum())
            den[kind] += float(((x @ weight_matrix(module).float().T) ** 2).sum())
        return fn

    handles = [t.module.register_forward_hook(hook(t.name)) for t in ftargets]
    collate = TrainCollator(tok.pad_token_id)
    with torch.no_grad():
        for b in itertools.islice(batches(skill_items, 16, seed=0), 8):
            batch = collate(b)
            fresh(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for h in handles:
        h.remove()
    ratios = {k: (num[k] / den[k]) ** 0.5 for k in num}

    skill = load_eval(args.data / "skill_val.jsonl")
    layers = sorted({int(n.split(".")[2]) for n in deltas})  # model.layers.<i>.mlp.<kind>

    def layer_of(name: str) -> int:
        return int(name.split(".")[2])

    thirds = [layers[len(layers) * j // 3: len(layers) * (j + 1) // 3] for j in range(3)]
    groups = {"none restored": set()}
    for kind in sorted({n.rpartition(".")[2] for n in deltas}):
        groups[f"{kind} restored"] = {n for n in deltas if n.rpartition(".")[2] == kind}
    for third in thirds:
        groups[f"layers {third[0]}-{third[-1]} restored"] = {n for n in deltas if layer_of(n) in third}
    groups["all restored (= expert)"] = set(deltas)
    results = {}
    for label, restored in groups.items():
        m = load_model(cfg.model, path=str(rd.expert_model))
        with torch.no_grad():
            for t in find_targets(m, cfg.model.target_modules):
                if t.name not in restored:
                    set_weight_matrix(t.module, weight_matrix(t.module).float() + deltas[t.name])
        r = evaluate(m, tok, skill, cfg.data.skill_checker, chat_template=cfg.data.chat_template,
                     max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size, progress=False)
        results[label] = r.accuracy
        print(f"{label:32s} skill {r.accuracy:.3f} ± {r.stderr:.3f}", flush=True)
    out = {"variant": args.variant, "update_over_weight_on_skill_activations": ratios, "skill_when_restored": results}
    print(json.dumps(out, indent=1))
    (rd.root / f"locate-{args.variant}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
