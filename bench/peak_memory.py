"""Child process: the memory one method needs to train a whole model, measured alone.

``python bench/peak_memory.py --method lora|palora|svf --model M ...`` loads the model, builds
the batch (the setup), then builds the method's modules (LoRA, PALoRA from a subspace file, or
SVF with its decomposition) and trains ``--steps`` steps as palora's loop does (AdamW,
``parametrize.cached()``). Prints one JSON line, every size in bytes and relative to the setup:
``state`` (after building, before training), ``predicted_state`` (bench/memory_model.py),
``peak`` (highest during building and training) and ``setup`` itself.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from torch.nn.utils import parametrize

from memory_model import Matrix, injection_state_bytes, svf_state_bytes
from palora.config import ModelConfig
from palora.core.linalg import iter_svd
from palora.core.orthogonal import add_lora
from palora.core.subspace import Subspace
from palora.core.svf import add_svf
from palora.core.targets import find_targets
from palora.io.artifacts import load_subspace
from palora.io.models import load_model
from palora.training.memory import MemProbe, make_resident


def load_subspaces(path: str) -> dict[str, Subspace]:
    grouped, _ = load_subspace(path, base_fingerprint=None)
    return {name: Subspace(g["indices"], g["U"], g["V"], g.get("weights")) for name, g in grouped.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=["lora", "palora", "svf"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--subspace", help="subspace.safetensors (palora)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    probe = MemProbe(device)

    model = make_resident(load_model(ModelConfig(name=args.model))).to(device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (args.batch, args.seq), generator=g).to(device)
    for w in model.parameters():
        w.requires_grad_(False)
    setup = probe.current()
    probe.reset_peak()

    targets = find_targets(model)
    shapes = [Matrix(*t.shape) for t in targets]
    b = next(model.parameters()).element_size()
    if args.method == "svf":
        # decomposed where the model is (on a GPU machine iter_svd would otherwise use the GPU)
        add_svf(model, "linear", progress=False, decompose=partial(iter_svd, device=device))
        predicted = sum(svf_state_bytes(w, b) for w in shapes)
    else:
        subspaces = load_subspaces(args.subspace) if args.method == "palora" else None
        torch.manual_seed(0)
        model = add_lora(model, targets, args.rank, args.alpha, subspaces=subspaces)
        ks = [subspaces[t.name].k if subspaces else 0 for t in targets]
        predicted = sum(injection_state_bytes(w, args.rank, k) for w, k in zip(shapes, ks))
    state = probe.current() - setup

    model.train()
    trainable = [w for w in model.parameters() if w.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    for _ in range(args.steps):
        with parametrize.cached():
            model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = probe.peak() - setup
    print(json.dumps({"method": args.method, "setup": setup, "state": state, "predicted_state": predicted,
                      "peak": peak, "peak_reset": probe.resets, "targets": len(targets)}))


if __name__ == "__main__":
    main()
