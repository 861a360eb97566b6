"""Rows behind the demo's speed settings, each the new way against the old one in one process.

``python bench/demo_speed.py --data runs/demo/data --out demo-speed.json``

* ``generate_batch``: greedy generation of the held-out known facts' prompts (``known_facts.jsonl``;
  :func:`palora.evaluation.generate`, 8 new tokens, as ``palora data`` filters the candidates) in
  batches of 100 prompts (``ours``, the demo's ``eval.batch_size``) against 50 (``baseline``, the
  earlier setting); seconds per prompt, and how many of the answers differ;
* ``covariance_eigh``: the eigendecomposition of the skill's input covariance of every MLP matrix
  (:func:`palora.core.statistics.input_covariance` through the base model on the probe's
  batches of skill lines, :func:`palora.protection.skill_batches`, ``--stat-batches`` of them) in
  float32 (``ours``) against float64; seconds for all matrices, the largest orthonormality error of the float32 eigenvectors and the largest difference in the share of the
  skill's input energy ``tr(Q_Sᵀ C Q_S) / tr C`` their top half holds (what the probe keeps). The
  top halves themselves may differ where the eigenvalues at the cut are at rounding level (``λ_k /
  λ_1 ≈ 1e-9`` in some ``down_proj``: directions the skill does not use), where either choice is
  as good;
* ``svf_step_kept_logits``: one SVF step (forward and backward through :class:`~palora.core.svf.SVFLinear`
  layers, padding-free batches of 16 skill lines, prompts masked) with
  :func:`palora.training.loss.next_token_loss` (``ours``) against the model's own loss, which
  projects every position through the output layer;
* ``inject_step_kept_logits``: the same on the demo's injection batches (peft LoRA r=16, fact
  lines and a quarter replayed from the kept files), where nearly every position has a target.

Each pair runs in turns (bench/timer.py); the step rows also report the largest relative loss
difference. ``--data``: a data folder of ``palora demo`` or ``palora data``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from palora.config import resolve
from palora.config.sections import ModelConfig
from palora.core.statistics import input_covariance
from palora.core.svf import add_svf
from palora.core.targets import find_targets
from palora.datasets.known_facts import MAX_NEW_TOKENS
from palora.evaluation import generate
from palora.io.data import batches, load_train, read_jsonl, tokenize_train
from palora.io.models import load_model_and_tokenizer
from palora.protection import skill_batches
from palora.replay import replay_lines
from palora.training.loss import next_token_loss
from palora.training.packing import FlatCollator
from table import Row, format_table, ratio_row, write_rows
from timer import alternate, median, relative_spread

CPU = torch.device("cpu")


def generate_row(model, tok, prompts: list[str], reps: int) -> Row:
    outputs: dict[int, list[str]] = {}

    def run(size: int):
        def call() -> None:
            outputs[size] = generate(model, tok, prompts, MAX_NEW_TOKENS, size, progress=False)
        return call

    times = alternate({100: run(100), 50: run(50)}, CPU, reps, warmup=0)
    differ = sum(a != b for a, b in zip(outputs[100], outputs[50], strict=True))
    n = len(prompts)
    return ratio_row("generate_batch", median(times[100]) / n, median(times[50]) / n, 1.0, "s/prompt", "cpu",
                     note=f"{n} known-fact prompts, {MAX_NEW_TOKENS} new tokens, batches of 100 against 50; "
                          f"{differ} answers differ; spread {relative_spread(times[100]):.0%} / {relative_spread(times[50]):.0%}",
                     prompts=n, answers_differ=differ)


def eigh_row(covariances: dict[str, torch.Tensor], reps: int) -> Row:
    def run(dtype: torch.dtype):
        return lambda: [torch.linalg.eigh(C.to(dtype)) for C in covariances.values()]

    times = alternate({"float32": run(torch.float32), "float64": run(torch.float64)}, CPU, reps, warmup=0)
    ortho, energy = 0.0, 0.0
    for C in covariances.values():
        k, Cd = C.shape[0] // 2, C.double()
        Q32 = torch.linalg.eigh(C.float())[1].flip(1)[:, :k].double()
        Q64 = torch.linalg.eigh(Cd)[1].flip(1)[:, :k]
        gram = Q32.T @ Q32 - torch.eye(k, dtype=torch.float64)
        ortho = max(ortho, float(gram.abs().max()))
        held = [float(torch.trace(Q.T @ Cd @ Q) / torch.trace(Cd).clamp_min(1e-30)) for Q in (Q32, Q64)]
        energy = max(energy, abs(held[0] - held[1]))
    return ratio_row("covariance_eigh", median(times["float32"]), median(times["float64"]), 1.0, "s", "cpu",
                     note=f"{len(covariances)} covariances of the skill's inputs; float32 eigenvectors orthonormal "
                          f"to {ortho:.1e}; their top half holds the skill's input energy share of float64's "
                          f"to {energy:.1e}", matrices=len(covariances), max_orthonormality_error=ortho,
                     max_energy_share_difference=energy)


def step_row(name: str, model: torch.nn.Module, items: list, n_batches: int, reps: int) -> Row:
    groups = [next(stream) for stream in [batches(items, 16, seed=0)] for _ in range(n_batches)]
    collated = [FlatCollator()(g) for g in groups]
    losses: dict[str, list[float]] = {"kept": [], "all": []}

    def loss(kind: str, batch: dict) -> torch.Tensor:
        return next_token_loss(model, batch)[0] if kind == "kept" else model(**batch, use_cache=False).loss

    def run(kind: str):
        def steps() -> None:  # every batch once: one sample is the mean step over the batches
            for batch in collated:
                value = loss(kind, batch)
                value.backward()
                model.zero_grad(set_to_none=True)  # no update: every sample sees the same weights
                losses[kind].append(float(value.detach()))
        return steps

    times = alternate({"kept": run("kept"), "all": run("all")}, CPU, reps, warmup=1)
    first = {k: v[:n_batches] for k, v in losses.items()}
    worst = max(abs(a - b) / abs(b) for a, b in zip(first["kept"], first["all"], strict=True))
    positions = sum(c["input_ids"].numel() for c in collated) / n_batches
    targets = sum(int((c["labels"] != -100).sum()) for c in collated) / n_batches
    return ratio_row(name, median(times["kept"]) / n_batches, median(times["all"]) / n_batches, 1.0, "s/step", "cpu",
                     note=f"{n_batches} batches of 16: {targets:.0f} targets in {positions:.0f} positions a batch; "
                          f"loss difference at most {worst:.1e} (relative); spread "
                          f"{relative_spread(times['kept']):.0%} / {relative_spread(times['all']):.0%}",
                     positions=positions, targets=targets, max_loss_difference=worst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a data folder of palora demo / palora data")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--model", default="smollm2-135m-instruct", help="packaged name, local folder or hub id")
    p.add_argument("--prompts", type=int, default=300, help="known-fact prompts for generate_batch")
    p.add_argument("--stat-batches", type=int, default=4, help="batches of 16 skill lines for the covariances")
    p.add_argument("--batches", type=int, default=4, help="batches per sample of a step row")
    p.add_argument("--reps", type=int, default=3, help="samples per arm")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    needed = ("skill_train.jsonl", "knowledge_train.jsonl", "known_facts.jsonl", "known_protect.jsonl", "general.jsonl")
    missing = [f for f in needed if not (data / f).exists()]
    if missing:
        p.error(f"--data {data}: no {missing[0]} (run `palora data --out DIR` first)")
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer(ModelConfig(name=args.model))
    model.eval()
    prompts = [r["prompt"] for r in read_jsonl(data / "known_facts.jsonl")][: args.prompts]
    rows = [generate_row(model, tok, prompts, args.reps)]

    cfg = resolve(overrides=[f"data.skill_train={data / 'skill_train.jsonl'}", f"probe.stat_batches={args.stat_batches}",
                             f"probe.keep_data=[{data / 'general.jsonl'},{data / 'known_protect.jsonl'}]",
                             "inject.replay_share=0.25"])
    names = [t.name for t in find_targets(model)]
    rows.append(eigh_row(input_covariance(model, skill_batches(cfg, tok), names, progress=False), args.reps))
    skill = tokenize_train(load_train(data / "skill_train.jsonl"), tok, cfg.data.max_length, False)

    add_svf(model, "linear", progress=False)
    rows.append(step_row("svf_step_kept_logits", model.train(), skill, args.batches, args.reps))

    model, tok = load_model_and_tokenizer(ModelConfig(name=args.model))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["gate_proj", "up_proj", "down_proj"]))
    facts = tokenize_train(load_train(data / "knowledge_train.jsonl"), tok, cfg.data.max_length, False)
    replayed = tokenize_train(replay_lines(cfg, len(facts)), tok, cfg.data.max_length, False)
    rows.append(step_row("inject_step_kept_logits", model.train(), [*facts, *replayed], args.batches, args.reps))
    print(format_table(rows))
    write_rows(Path(args.out), rows, command="python bench/demo_speed.py " + " ".join(sys.argv[1:] if argv is None
               else argv), threads=torch.get_num_threads(), wall_time_s=round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
