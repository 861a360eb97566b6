"""Stage 1 in your own transformers.Trainer script: train an SVF expert, save only its scales.

    python examples/trainer_svf.py --out runs/hf                     # SmolLM2-135M-Instruct, the bundled skill data
    python examples/trainer_svf.py --model PATH_OR_HUB_ID --data skill.jsonl --out runs/x --steps 50

``--data`` is a training JSONL (``{"prompt", "completion"}`` or ``{"text"}`` lines); ``--model`` a
local transformers folder, a hub id, or the packaged ``smollm2-135m-instruct``. Written into ``--out``:

- ``svf_expert.safetensors``: the learned scales ``z`` (at every trainer save and at the end),
  written by ``SaveAdapterCallback``;
- ``expert_model/``: the expert merged into the weights, a stock transformers checkpoint;
- ``checkpoints/``: the Trainer's own checkpoints (``--resume`` continues from the last one).

Next: ``palora probe --out OUT --set model.name=MODEL --set data.skill_train=DATA`` writes
``OUT/subspace.safetensors``, and ``examples/trl_sft_orthogonal_lora.py --model OUT/expert_model --subspace OUT/subspace.safetensors``
injects knowledge away from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from palora.core.svf import merge_svf
from palora.integrations.hf import SaveAdapterCallback, create_optimizer, prepare_svf
from palora.io.data import TrainCollator, load_train, tokenize_train
from palora.io.models import load_tokenizer, resolve_model_path

DATA = Path(__file__).resolve().parent / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train an SVF expert with transformers.Trainer.")
    p.add_argument("--model", default="smollm2-135m-instruct", help="folder, hub id or packaged model name")
    p.add_argument("--data", default=str(DATA / "skill_train.jsonl"), help="training JSONL of the skill")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps")
    p.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--weight-decay", type=float, default=0.01, help="never applied to z")
    p.add_argument("--parametrization", choices=("linear", "t2"), default="linear")
    p.add_argument("--max-length", type=int, default=256, help="longest training sequence in tokens")
    p.add_argument("--save-steps", type=int, default=50, help="Trainer checkpoint (and adapter) interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT/checkpoints")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    model = prepare_svf(model, parametrization=args.parametrization)
    train_set = tokenize_train(load_train(args.data), tokenizer, args.max_length, chat_template=False)

    training_args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=args.steps // 10,
        logging_steps=max(1, args.steps // 10),
        save_steps=args.save_steps,
        save_total_limit=1,
        report_to=[],
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        data_collator=TrainCollator(tokenizer.pad_token_id),
        optimizers=(create_optimizer(model, training_args), None),  # z in a weight_decay=0 group
        callbacks=[SaveAdapterCallback(out)],  # out/svf_expert.safetensors at every save
    )
    trainer.train(resume_from_checkpoint=args.resume or None)

    merge_svf(model)  # W_z written into the weights: a stock transformers model
    model.save_pretrained(out / "expert_model")
    tokenizer.save_pretrained(out / "expert_model")
    print(f"wrote {out / 'svf_expert.safetensors'} and {out / 'expert_model'}")


if __name__ == "__main__":
    main()
