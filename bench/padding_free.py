"""Rows: an injection step on padding-free batches against the same step on right-padded ones.

``python bench/padding_free.py --data runs/demo/data --out padding-free.json``

The demo's injection (SmolLM2-135M-Instruct, peft LoRA r=16 on every MLP matrix, batch 16,
forward and backward; no update, so that both collators see the same weights) on the first batches the loop draws
(:func:`palora.io.data.batches`, seed 0), collated two ways:

* ``baseline``: :class:`palora.io.data.TrainCollator`, every sequence right-padded to the batch's
  longest;
* ``ours``: :class:`palora.training.packing.FlatCollator`, the sequences joined in one row.

Two rows: ``step_facts`` (the fact lines alone: plain LoRA, act-protect) and ``step_replay`` (a
quarter of the lines replayed from the kept general text and known facts, ``inject.replay_share
0.25``: lora-replay, act-protect-replay). Both collators run in turns (bench/timer.py), and each
row also reports the largest relative difference of the two losses over the batches (the two are
the same computation up to rounding). ``--data``: a data folder of ``palora demo`` or ``palora
data`` (knowledge_train.jsonl, general.jsonl, known_protect.jsonl).
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
from palora.io.data import TrainCollator, batches, load_train, tokenize_train
from palora.io.models import load_model_and_tokenizer
from palora.replay import replay_lines
from palora.training.packing import FlatCollator, honours_packing
from table import Row, format_table, ratio_row, write_rows
from timer import alternate, median, relative_spread

MLP = ["gate_proj", "up_proj", "down_proj"]


def step_row(name: str, model: torch.nn.Module, items: list, pad_id: int, n_batches: int, reps: int) -> Row:
    groups = [next(stream) for stream in [batches(items, 16, seed=0)] for _ in range(n_batches)]
    collators = {"padded": TrainCollator(pad_id), "flat": FlatCollator()}
    collated = {k: [c(g) for g in groups] for k, c in collators.items()}
    losses: dict[str, list[float]] = {k: [] for k in collators}

    def run(kind: str):
        def steps() -> None:  # every batch once: one sample is the mean step over the batches
            for batch in collated[kind]:
                loss = model(**batch, use_cache=False).loss
                loss.backward()
                model.zero_grad(set_to_none=True)  # no update: every sample sees the same weights
                losses[kind].append(float(loss.detach()))
        return steps

    times = alternate({k: run(k) for k in collators}, torch.device("cpu"), reps, warmup=1)
    per_step = {k: median(v) / n_batches for k, v in times.items()}
    first = {k: v[:n_batches] for k, v in losses.items()}
    worst = max(abs(a - b) / abs(b) for a, b in zip(first["flat"], first["padded"], strict=True))
    padded_positions = sum(c["input_ids"].numel() for c in collated["padded"]) / n_batches
    tokens = sum(c["input_ids"].numel() for c in collated["flat"]) / n_batches
    return ratio_row(name, per_step["flat"], per_step["padded"], None, "s/step", "cpu",
                     note=f"{n_batches} batches of 16, {tokens:.0f} tokens against {padded_positions:.0f} padded "
                          f"positions a batch; loss difference at most {worst:.1e} (relative); spread "
                          f"{relative_spread(times['flat']):.0%} / {relative_spread(times['padded']):.0%}",
                     tokens=tokens, padded_positions=padded_positions, max_loss_difference=worst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a data folder of palora demo / palora data")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--model", default="smollm2-135m-instruct", help="packaged name, local folder or hub id")
    p.add_argument("--batches", type=int, default=6, help="batches per sample")
    p.add_argument("--reps", type=int, default=5, help="samples per collator")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    missing = [f for f in ("knowledge_train.jsonl", "general.jsonl", "known_protect.jsonl") if not (data / f).exists()]
    if missing:
        p.error(f"--data {data}: no {missing[0]} (run `palora data --out DIR` first)")
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer(ModelConfig(name=args.model))
    if not honours_packing(model):
        p.error(f"{args.model} does not keep joined sequences apart: nothing to compare")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=MLP)).train()
    cfg = resolve(overrides=[f"probe.keep_data=[{data / 'general.jsonl'},{data / 'known_protect.jsonl'}]",
                             "inject.replay_share=0.25"])
    facts = tokenize_train(load_train(data / "knowledge_train.jsonl"), tok, cfg.data.max_length, False)
    replayed = tokenize_train(replay_lines(cfg, len(facts)), tok, cfg.data.max_length, False)
    rows = [step_row("step_facts", model, facts, tok.pad_token_id, args.batches, args.reps),
            step_row("step_replay", model, [*facts, *replayed], tok.pad_token_id, args.batches, args.reps)]
    print(format_table(rows))
    write_rows(Path(args.out), rows, command="python bench/padding_free.py " + " ".join(sys.argv[1:] if argv is None
               else argv), threads=torch.get_num_threads(), wall_time_s=round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
