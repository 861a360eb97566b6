"""Training checkpoints: everything a killed stage needs to continue as if it had never stopped.

A checkpoint is a folder ``<run>/checkpoints/<stage>/`` with two files, written together
atomically (a temporary folder, then one rename):

- ``state.safetensors``: the trainable parameters (``param.<name>``), the optimizer's per-parameter
  state (``optim.<name>.<key>``, e.g. AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``) and the
  torch RNG states (``rng.cpu``, ``rng.cuda.<device>``), full tensors however the model is sharded;
- ``state.json``: the step, the losses so far, the optimizer's parameter groups, the scheduler's
  state, Python's and NumPy's RNG states, and the digest of the stage's inputs.

No pickle anywhere: tensors in safetensors, the rest in JSON. The data position needs no state of
its own: batch ``s`` of :func:`palora.io.data.batches` depends on ``(seed, s)`` alone, so a resumed
loop restarts the stream at ``step * grad_accum``. With the same parameters, optimizer moments,
learning-rate schedule, RNG and data, the continued run on CPU is bitwise the uninterrupted one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ..errors import ArtifactError

STATE = "state.safetensors"
META = "state.json"


@dataclass(frozen=True)
class CheckpointSpec:
    """Where and how often a training loop checkpoints, and the inputs it must match."""

    folder: Path
    every: int  # optimizer steps between two checkpoints; 0 = never
    digest: str  # of the stage's inputs (palora.stages.engine): a checkpoint of other inputs is ignored


@dataclass
class Resumed:
    step: int
    losses: list[float]


#: full (gathered) tensors of the trainable parameters only; under FSDP2 only rank 0 receives them
_OPTIONS = StateDictOptions(full_state_dict=True, ignore_frozen_params=True, cpu_offload=True)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(internal), gauss],
                     "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}


def _set_rng_state(tensors: dict[str, torch.Tensor], states: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(spec: CheckpointSpec, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, step: int, losses: list[float], write: bool = True) -> None:
    """Write the checkpoint of ``step`` over the previous one, atomically.

    Every process must call this (gathering FSDP2 shards is collective); only ``write`` writes.
    Parameters and optimizer state are keyed by parameter name (``torch.distributed.checkpoint``'s
    state-dict API), so a checkpoint does not depend on how the model is sharded.
    """
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    if not write:
        return
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # not buffers (projector bases)
    tensors = {f"param.{n}": t.detach().cpu().contiguous() for n, t in model_sd.items() if n in trainable}
    for name, state in optim_sd["state"].items():
        for key, value in state.items():
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {key} is not a tensor")  # AdamW keeps only tensors
            tensors[f"optim.{name}.{key}"] = value.detach().cpu().contiguous()
    rng_tensors, rng = _rng_state()
    tensors.update(rng_tensors)
    meta = {"step": step, "losses": losses, "digest": spec.digest, "param_groups": optim_sd["param_groups"],
            "scheduler": scheduler.state_dict(), "rng": rng}

    spec.folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.folder.with_name(f".{spec.folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / STATE))
    (tmp / META).write_text(json.dumps(meta), encoding="utf-8")
    old = spec.folder.with_name(f".{spec.folder.name}.old")
    if spec.folder.exists():
        spec.folder.rename(old)  # a crash between the two renames leaves .old, which load finds
    tmp.rename(spec.folder)
    shutil.rmtree(old, ignore_errors=True)


def _readable(folder: Path) -> Path | None:
    for candidate in (folder, folder.with_name(f".{folder.name}.old")):
        if (candidate / STATE).is_file() and (candidate / META).is_file():
            return candidate
    return None


def load_checkpoint(spec: CheckpointSpec, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> Resumed | None:
    """Restore the state saved for ``spec`` into the live objects; ``None`` when there is none.

    Every process reads the file and loads the full tensors (FSDP2 keeps its own shard of them).
    A checkpoint written for other inputs (another digest) is ignored; an unreadable one is an
    error (it is never silently replaced by a fresh start).
    """
    folder = _readable(spec.folder)
    if folder is None:
        return None
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        with safe_open(str(folder / STATE), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (OSError, ValueError, SafetensorError) as e:
        raise ArtifactError(f"checkpoint {folder} is unreadable ({e}); delete it to start the stage over") from None
    if meta.get("digest") != spec.digest:
        return None

    model_sd = {k.removeprefix("param."): v for k, v in tensors.items() if k.startswith("param.")}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(model_sd) != trainable:
        raise ArtifactError(f"checkpoint {folder} holds other trainable parameters than this stage's model")
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            name, _, field = key.removeprefix("optim.").rpartition(".")
            state.setdefault(name, {})[field] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]  # JSON has no tuples
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict={"state": state, "param_groups": groups},
                   options=StateDictOptions(full_state_dict=True, ignore_frozen_params=True, strict=False))
    scheduler.load_state_dict(meta["scheduler"])
    _set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
    return Resumed(step=int(meta["step"]), losses=[float(x) for x in meta["losses"]])


def last_step(folder: Path) -> int | None:
    """The step of the checkpoint in ``folder``, if any (for messages)."""
    found = _readable(folder)
    if found is None:
        return None
    try:
        return int(json.loads((found / META).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError):
        return None


def discard_checkpoint(folder: Path) -> None:
    """Remove a stage's checkpoint (and the checkpoints folder, once it is empty)."""
    for path in (folder, folder.with_name(f".{folder.name}.old"), folder.with_name(f".{folder.name}.partial")):
        shutil.rmtree(path, ignore_errors=True)
    try:
        folder.parent.rmdir()  # only when no other stage's checkpoint is left in it
    except OSError:
        pass
