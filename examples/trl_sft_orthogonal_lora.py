"""Stage 3 in your own TRL script: SFTTrainer with a LoRA kept orthogonal to the protected components.

    python examples/trl_sft_orthogonal_lora.py --model runs/hf/expert_model \\
        --subspace runs/hf/subspace.safetensors --out runs/hf_inject
    python examples/trl_sft_orthogonal_lora.py --subspace runs/demo/subspace.safetensors --out runs/y --steps 50

Needs TRL (palora's ``trl`` extra: ``pip install -e '.[trl]'`` in its clone). ``--subspace`` is the ``subspace.safetensors`` of
``palora probe`` (or ``palora run``); ``--model`` the expert it was probed on (``OUT/expert_model``)
or its base model (default: the packaged ``smollm2-135m-instruct``), checked by fingerprint.
``--data`` is a training JSONL (``{"prompt", "completion"}`` or ``{"text"}`` lines, TRL's own
conventions). Written into ``--out``: ``adapter/``, a plain peft LoRA adapter with the projection
already in ``A`` and ``B`` (``PeftModel.from_pretrained(model, OUT/adapter)`` reproduces the trained
model), at every trainer save and at the end; ``checkpoints/``, TRL's own checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from palora.integrations.hf import SaveAdapterCallback, create_optimizer, prepare_orthogonal_lora
from palora.io.data import load_train
from palora.io.models import load_tokenizer, resolve_model_path

try:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
except ImportError:  # an optional extra
    sys.exit("this example needs TRL: pip install 'trl>=1.16,<2' (palora's trl extra)")

DATA = Path(__file__).resolve().parent / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Inject knowledge with TRL's SFTTrainer and orthogonal LoRA.")
    p.add_argument("--model", default="smollm2-135m-instruct", help="the expert (or its base): folder, hub id, name")
    p.add_argument("--subspace", required=True, help="subspace.safetensors made for this model")
    p.add_argument("--data", default=str(DATA / "knowledge_train.jsonl"), help="training JSONL of the knowledge")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rank", type=int, default=16, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha (scale alpha / rank)")
    p.add_argument("--side", choices=("both", "in", "out"), default="both", help="which side(s) to project")
    p.add_argument("--max-length", type=int, default=256, help="longest training sequence in tokens")
    p.add_argument("--save-steps", type=int, default=50, help="trainer checkpoint (and adapter) interval")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def training_rows(path: str) -> list[dict[str, str]]:
    """TRL rows: ``{"text"}`` when no line has a prompt, else ``{"prompt", "completion"}``."""
    examples = load_train(path)  # checked, with FILE:LINE errors
    if not any(ex.prompt for ex in examples):
        return [{"text": ex.completion} for ex in examples]
    return [{"prompt": ex.prompt, "completion": ex.completion} for ex in examples]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    torch.manual_seed(args.seed)  # peft's initialisation of A
    model = prepare_orthogonal_lora(model, args.subspace, rank=args.rank, alpha=args.alpha, side=args.side)

    config = SFTConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=args.steps // 10,
        logging_steps=max(1, args.steps // 10),
        save_steps=args.save_steps,
        save_total_limit=1,
        max_length=args.max_length,
        bf16=False,  # float32 throughout, as palora's own recipes (TRL's default is bf16 autocast)
        report_to=[],
        seed=args.seed,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(training_rows(args.data)),
        processing_class=tokenizer,
        optimizers=(create_optimizer(model, config), None),  # adapters' no-decay declarations honoured
        callbacks=[SaveAdapterCallback(out)],  # out/adapter/ at every save
    )
    trainer.train()
    print(f"wrote {out / 'adapter'} (load it with PeftModel.from_pretrained on {path})")


if __name__ == "__main__":
    main()
