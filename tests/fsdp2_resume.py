"""Run under ``torchrun --nproc_per_node 2`` by tests/test_distributed.py (not a test module itself).

FSDP2 through palora's loop: orthogonal LoRA on a tiny Llama, every decoder layer sharded. Run 1
trains 8 steps and leaves the checkpoint of step 6 (gathered from the shards); run 2, a fresh
sharded model, resumes from it. Both must end on the same parameters, the parameters must really
be shards (DTensor), and the trained update must stay orthogonal to the protected subspace.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from palora.config import TrainConfig
from palora.core.linalg import iter_svd
from palora.core.orthogonal import add_lora, bake_projections, certificate, lora_delta
from palora.core.subspace import Subspace
from palora.core.targets import find_targets
from palora.io.data import TrainCollator
from palora.training.checkpoint import CheckpointSpec
from palora.training.distributed import barrier, is_main
from palora.training.loop import full_trainable_state, train
from tiny import make_tiny_model


def build():
    torch.manual_seed(0)
    model = make_tiny_model("llama", seed=0)
    targets = find_targets(model, None)
    subspaces = {t.name: Subspace.from_svd(svd, torch.arange(0, 24, 2)) for t, svd in iter_svd(targets)}
    return add_lora(model, targets, 4, 8, 0.0, subspaces=subspaces, side="both"), subspaces


def main(folder: Path) -> None:
    g = torch.Generator().manual_seed(0)
    items = [{"input_ids": (ids := torch.randint(3, 128, (6 + i % 5,), generator=g).tolist()), "labels": ids}
             for i in range(32)]
    cfg = TrainConfig(steps=8, batch_size=2, lr=1e-2, checkpoint_every=3, sharding="fsdp2", warmup_ratio=0.0)
    spec = CheckpointSpec(folder, 3, "fsdp2-test")
    first, subspaces = build()
    r1 = train(first, items, TrainCollator(0), cfg, seed=0, stage="first", progress=False, checkpoint=spec)
    assert r1.sharded and any(isinstance(p, DTensor) for p in first.parameters() if p.requires_grad)
    one = full_trainable_state(first)
    barrier()
    second, _ = build()
    r2 = train(second, items, TrainCollator(0), cfg, seed=0, stage="second", progress=False, checkpoint=spec)
    two = full_trainable_state(second)
    assert r2.losses[:6] == r1.losses[:6], (r1.losses, r2.losses)
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 1e-6, worst

    if is_main():  # the whole trained adapter, rebuilt unsharded: still orthogonal to S
        plain, _ = build()
        plain.load_state_dict(one, strict=False)
        bake_projections(plain)
        cert = max(max(certificate(lora_delta(plain, name), subspaces[name])) for name in subspaces)
        assert cert < 1e-5, cert
        print(f"OK resumed-diff={worst:.2e} certificate={cert:.2e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
