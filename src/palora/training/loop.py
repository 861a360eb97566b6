"""The one training loop of both stages (SVF expert and injection), built on accelerate.

AdamW over the parameters with ``requires_grad``; parameters a module declares through
``no_decay_parameters()`` (the SVF scales ``z``) get no weight decay. Linear warm-up, then cosine,
linear or constant decay; gradient accumulation; gradient-norm clipping; a progress bar; one
record per log step to a :class:`~palora.io.metrics_log.MetricsLog` (``metrics.jsonl``, TensorBoard
or W&B when asked) and one fixed-format line on the console, on the main process only. With a
:class:`~palora.training.checkpoint.CheckpointSpec` the loop saves its whole state every
``checkpoint_every`` steps and, when a checkpoint of the same inputs exists, continues from it
(bitwise the uninterrupted run on CPU; see :mod:`palora.training.checkpoint`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor
from torch.nn.utils import parametrize
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..config import TrainConfig
from ..errors import PaloraError
from ..io.data import batches
from ..io.metrics_log import MetricsLog
from .checkpoint import CheckpointSpec, last_step, load_checkpoint, save_checkpoint
from .distributed import fully_shard_layers
from .loss import keeps_logits, next_token_loss
from .packing import Collator

#: at most this many metric lines of a stage on the console
CONSOLE_LINES = 10


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: declared no-decay parameters, and every other trainable parameter."""
    no_decay: dict[int, nn.Parameter] = {}
    for module in model.modules():
        declare = getattr(module, "no_decay_parameters", None)
        if callable(declare):
            no_decay.update({id(p): p for p in declare()})
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PaloraError("nothing to train: the model has no trainable parameters")
    groups = [
        {"params": [p for p in trainable if id(p) in no_decay], "weight_decay": 0.0},
        {"params": [p for p in trainable if id(p) not in no_decay], "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


#: ``loss_fn(model, batch) -> (loss, stats)``: the scalar to minimise on a collated micro-batch and
#: extra numbers to log (averaged over the micro-batches of a step), e.g. :mod:`palora.training.reinforce`'s
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    wall_time_s: float
    trainable_parameters: int
    losses: list[float] = field(default_factory=list)
    #: the parameters are FSDP2 shards: read the trained values with :func:`full_trainable_state`
    sharded: bool = False


def train(
    model: nn.Module,
    items: Sequence[dict[str, list[int]]],
    collator: Collator,
    cfg: TrainConfig,
    *,
    seed: int,
    stage: str,
    log: MetricsLog | None = None,
    progress: bool = True,
    accelerator: Accelerator | None = None,
    checkpoint: CheckpointSpec | None = None,
    regularizer: Callable[[], torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train the trainable parameters of ``model`` on tokenised ``items`` for ``cfg.steps`` steps.

    The loss is the model's mean next-token cross-entropy over the labelled tokens of a batch
    (:func:`palora.training.loss.next_token_loss`: logits only where a label follows), plus
    ``regularizer()`` when given (a penalty on the parameters, added once per micro-batch; the
    logged loss is the cross-entropy alone, the penalty is logged as ``penalty``).
    ``loss_fn`` replaces the cross-entropy by another objective on ``collator(items)``; its
    stats join the log records. ``on_step(step, model)`` is called on every process after each
    optimizer step with the model handed in (whole, not sharded: refused under FSDP2), e.g. to save
    snapshots of the adapter.
    """
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    n_trainable = count_trainable(model)
    # FSDP2 when asked, or when launched with an accelerate FSDP config: sharded here, by
    # fully_shard per decoder layer (the same code on every device), not by accelerate's plugin
    own_fsdp = acc.num_processes > 1 and (cfg.sharding == "fsdp2" or acc.distributed_type == DistributedType.FSDP)
    if own_fsdp and on_step is not None:
        raise PaloraError(f"{stage}: a step hook (snapshots) reads the whole model, which FSDP2 shards")
    if own_fsdp:  # before the optimizer exists: its parameters become the shards
        fully_shard_layers(model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    warmup = int(round(cfg.warmup_ratio * cfg.steps))
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=cfg.steps)
    if not own_fsdp:  # one process or DDP; the scheduler steps once per optimizer step
        model, optimizer = acc.prepare(model, optimizer)
    sharded = own_fsdp
    module = acc.unwrap_model(model)  # parameter names as in the model handed in
    own_loss = loss_fn is None  # the cross-entropy (token-weighted across processes), not another objective
    if own_loss and keeps_logits(module):
        loss_fn = next_token_loss
    model.train()

    first, losses = 1, []
    if checkpoint is not None:
        resumed = load_checkpoint(checkpoint, module, optimizer, scheduler)
        if resumed is not None:
            first, losses = resumed.step + 1, resumed.losses
    # each process sees its own shard of every global batch
    world, rank = acc.num_processes, acc.process_index
    stream = batches(list(items), cfg.batch_size * world, seed=seed, start_step=(first - 1) * cfg.grad_accum)
    log = log if acc.is_main_process else None
    if log is not None:  # what an interrupted attempt logged from step `first` on is forgotten
        log.start(stage, first)
    bar = tqdm(total=cfg.steps, initial=first - 1, desc=stage, disable=not (progress and acc.is_main_process),
               unit="step")
    # the console gets a line at most every tenth of the stage (metrics.jsonl every log step), none when quiet
    console_every = cfg.log_every * math.ceil(math.ceil(cfg.steps / CONSOLE_LINES) / cfg.log_every)
    if first > 1:
        bar.write(f"{stage}: resumed from the checkpoint of step {first - 1}")
    start = last = time.perf_counter()
    last_logged = first - 1
    try:
        for step in range(first, cfg.steps + 1):
            step_loss, step_penalty, step_stats = 0.0, 0.0, {}
            for micro in range(cfg.grad_accum):
                group = next(stream)
                shard = group[rank::world] or group[:1]
                batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in collator(shard).items()}
                # gradients are all-reduced once per optimizer step, on the last micro-batch
                last_micro = micro == cfg.grad_accum - 1
                sync = nullcontext() if (last_micro or own_fsdp) else acc.no_sync(model)
                with sync, parametrize.cached():  # each projection computed once per micro-batch
                    loss, stats = loss_fn(model, batch) if loss_fn is not None else (model(**batch, use_cache=False).loss, {})
                    if world > 1 and own_loss:  # the global batch's token mean, whatever each shard's token count
                        loss = loss * _token_weight(acc, batch["labels"], world)
                    penalty = regularizer() if regularizer is not None else None
                    acc.backward((loss if penalty is None else loss + penalty) / cfg.grad_accum)
                if penalty is not None:
                    step_penalty += float(penalty.detach()) / cfg.grad_accum
                if world > 1:
                    loss = acc.reduce(loss.detach(), reduction="mean")
                step_loss += float(loss.detach()) / cfg.grad_accum
                for k, v in stats.items():
                    step_stats[k] = step_stats.get(k, 0.0) + v / cfg.grad_accum
            if not math.isfinite(step_loss + step_penalty):  # before the update: the weights stay the last good ones
                raise PaloraError(f"{stage}: the loss became {step_loss} at step {step}; "
                                  f"{_kept(checkpoint)}lower the learning rate")
            grad_norm = None
            if cfg.max_grad_norm > 0 and own_fsdp:  # DTensor gradients: torch computes the global norm
                grad_norm = _full(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            elif cfg.max_grad_norm > 0:
                grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if checkpoint is not None and checkpoint.every and step % checkpoint.every == 0 and step < cfg.steps:
                # every rank takes part (gathering shards is collective); the main process writes
                save_checkpoint(checkpoint, module, optimizer, scheduler, step, losses, write=acc.is_main_process)
            if on_step is not None:
                on_step(step, module)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
            if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                now = time.perf_counter()
                record = {
                    "stage": stage,
                    "step": step,
                    "loss": round(step_loss, 6),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": None if grad_norm is None else round(float(grad_norm), 6),
                    **({"penalty": round(step_penalty, 6)} if regularizer is not None else {}),
                    **{k: round(v, 6) for k, v in step_stats.items()},
                    "time_s": round(now - start, 3),
                }
                log.write(record)
                if progress and (step % console_every == 0 or step == cfg.steps):
                    bar.write(
                        f"{stage} step {step}/{cfg.steps}: loss {step_loss:.4f}, lr {record['lr']:.2e}, "
                        f"time {1000 * (now - last) / (step - last_logged):.0f}ms/step"
                    )
                    last, last_logged = now, step
    finally:
        bar.close()
        if log is not None:
            log.finish()
    model.eval()
    return TrainResult(cfg.steps, losses[-1], time.perf_counter() - start, n_trainable, losses, sharded)


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters by name, as full CPU tensors on every rank (collective under FSDP2)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, ignore_frozen_params=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # not buffers (projector bases)
    return {name: _full(t).detach().cpu() for name, t in state.items() if name in trainable}


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def _token_weight(acc: Accelerator, labels: torch.Tensor, world: int) -> float:
    """``P · n_p / Σ n``: the model's loss is the mean over this shard's ``n_p`` labelled tokens and
    DDP averages gradients over the ``P`` ranks, so this weight makes the step the mean over all
    the global batch's tokens, as one process with the whole batch would compute it."""
    n = (labels[:, 1:] != -100).sum()
    total = acc.reduce(n.clone(), reduction="sum")
    return world * float(n) / max(float(total), 1.0)


def _kept(checkpoint: CheckpointSpec | None) -> str:
    step = last_step(checkpoint.folder) if checkpoint is not None else None
    return "" if step is None else f"the last good checkpoint (step {step}) is kept in {checkpoint.folder}; "



def load_trained(model: nn.Module, trained: dict[str, torch.Tensor]) -> nn.Module:
    """Copy trained parameters (by name) into a freshly built, unsharded copy of the trained model."""
    result = model.load_state_dict(trained, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"trained parameters without a place in the rebuilt model: {result.unexpected_keys[:3]}")
    return model
