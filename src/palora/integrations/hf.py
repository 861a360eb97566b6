"""PALoRA adapters inside your own ``transformers.Trainer`` or TRL ``SFTTrainer`` script.

Stage 1, an SVF expert (only the per-singular-value scales ``z`` train)::

    from palora.integrations.hf import SaveAdapterCallback, create_optimizer, prepare_svf

    model = prepare_svf(AutoModelForCausalLM.from_pretrained(path))
    args = TrainingArguments(output_dir="out", weight_decay=0.1, ...)
    trainer = Trainer(model=model, args=args, train_dataset=..., data_collator=...,
                      optimizers=(create_optimizer(model, args), None),   # z is never decayed
                      callbacks=[SaveAdapterCallback("out")])           # out/svf_expert.safetensors
    trainer.train()

Stage 3, LoRA kept away from the protected components (``subspace.safetensors`` from
``palora probe``, made for this model or for the base model of this expert)::

    model = prepare_orthogonal_lora(AutoModelForCausalLM.from_pretrained(expert), "run/subspace.safetensors",
                                    rank=16, alpha=32)
    trainer = SFTTrainer(model=model, args=SFTConfig(...), train_dataset=...,
                         callbacks=[SaveAdapterCallback("out")])        # out/adapter/, a plain peft adapter
    trainer.train()
    # later: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(expert), "out/adapter")

:class:`SaveAdapterCallback` writes only the adapter, atomically, at every checkpoint the trainer
saves and at the end of training, with the fingerprints palora's loaders check; training goes on
unchanged afterwards (the projections stay in place). It also stops training before the first
step if the trainer's optimizer would weight-decay ``z`` (the default ``Trainer.create_optimizer``
does when ``weight_decay > 0``): pass ``optimizers=(create_optimizer(model, args), None)``.
The trainer's own checkpoints (``checkpoint-N/``) keep working, ``resume_from_checkpoint`` included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import (
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from ..core.linalg import fingerprint
from ..core.orthogonal import Side, add_lora, projected_modules, projected_state_dict
from ..core.svf import Parametrization, add_svf, svf_layers, svf_state
from ..core.targets import Target, set_weight_matrix
from ..errors import FingerprintError, PaloraError
from ..io.artifacts import RunDir, atomic_path, save_svf_expert, stamp_adapter
from ..protection import load_for_model
from ..training.loop import param_groups

#: attribute :func:`prepare_orthogonal_lora` sets on the model: the subspace's base fingerprint
BASE_FINGERPRINT_ATTR = "palora_base_fingerprint"
ADAPTER_DIR = "adapter"


# ----------------------------------------------------------------------------- adding adapters


def prepare_svf(
    model: PreTrainedModel,
    target_modules: list[str] | None = None,
    parametrization: Parametrization = "linear",
    t2_init: float = 0.1,
    progress: bool = False,
) -> PreTrainedModel:
    """Add an SVF expert to every target matrix of ``model`` (in place); only ``z`` stays trainable."""
    add_svf(model, parametrization, target_modules, t2_init, progress=progress)
    return model


def prepare_orthogonal_lora(
    model: PreTrainedModel,
    subspace_path: str | Path,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.0,
    side: Side = "both",
    soft: bool = False,
) -> PeftModel:
    """Wrap ``model`` in a peft LoRA on the subspace's matrices, projected away from it.

    ``model`` must be the expert the subspace was probed on or its base model (fingerprint
    checked; the SVF expert only rescales singular values, so both share the protected vectors).
    Seed torch first: peft initialises ``A`` at random.
    """
    targets, subspaces, meta = load_for_model(subspace_path, model)  # fingerprint checked: the expert or its base
    peft_model = add_lora(model, targets, rank, alpha, dropout, subspaces=subspaces, side=side, soft=soft)
    setattr(peft_model, BASE_FINGERPRINT_ATTR, meta.get("base_fingerprint") or fingerprint(targets))
    return peft_model


# ----------------------------------------------------------------------------- optimizer


def optimizer_grouped_parameters(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: what the adapters declare no-decay (SVF's ``z``) gets weight_decay 0."""
    return param_groups(model, weight_decay)


def create_optimizer(model: nn.Module, args: TrainingArguments) -> torch.optim.Optimizer:
    """The optimizer ``args.optim`` names (lr, betas, eps from ``args``) over :func:`optimizer_grouped_parameters`.

    Pass it as ``Trainer(..., optimizers=(create_optimizer(model, args), None))``.
    """
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    builds_own_groups = {"params", "model", "optimizer_dict"} & set(kwargs)
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)) or builds_own_groups:
        raise PaloraError(f"optim={args.optim} builds its own parameter groups; use an AdamW variant (adamw_torch)")
    return optimizer_cls(optimizer_grouped_parameters(model, args.weight_decay), **kwargs)


def check_no_decay(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise if ``optimizer`` would weight-decay a parameter that an adapter declares no-decay."""
    declared = {id(p) for g in param_groups(model, 1.0) if g["weight_decay"] == 0.0 for p in g["params"]}
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0.0) > 0 and any(id(p) in declared for p in group["params"]):
            raise PaloraError(
                f"the optimizer weight-decays the SVF scales z (weight_decay={group['weight_decay']}); "
                "pass optimizers=(palora.integrations.hf.create_optimizer(model, args), None) to the trainer"
            )


# ----------------------------------------------------------------------------- saving


def _merged_targets(model: nn.Module) -> Iterator[Target]:
    """Each SVF layer's base layer with ``W_z`` written in, one copy at a time (as :func:`merge_svf` leaves it)."""
    for name, layer in svf_layers(model).items():
        merged = copy.deepcopy(layer.base_layer)
        set_weight_matrix(merged, layer.merged_weight())
        yield Target(name, merged)


def _lora_base_targets(peft_model: PeftModel) -> list[Target]:
    """The weights under the LoRA layers (the expert the adapter is meant for), named as in the model."""
    inner = peft_model.base_model.model
    return [Target(n, m.get_base_layer()) for n, m in inner.named_modules() if isinstance(m, LoraLayer)]


def save_adapter(model: nn.Module, output_dir: str | Path, base_fingerprint: str | None = None) -> list[Path]:
    """Write only the adapter of ``model`` into ``output_dir``, atomically; return the paths written.

    SVF layers -> ``svf_expert.safetensors`` (``<name>.z``, ``<name>.sigma``); a peft LoRA ->
    ``adapter/``, a plain peft adapter with the projections applied to ``A`` and ``B`` (the model
    itself is not changed). ``base_fingerprint`` (the headers' base model) is checked against the
    SVF layers' own weights; for LoRA it defaults to the subspace's.
    """
    rd, written = RunDir(output_dir), []
    layers = svf_layers(model)
    if layers:
        base_fp = fingerprint(Target(n, layer.base_layer) for n, layer in layers.items())
        if base_fingerprint is not None and base_fingerprint != base_fp:
            raise FingerprintError(f"base_fingerprint {base_fingerprint} is not this model's base ({base_fp})")
        parametrization = next(iter(layers.values())).parametrization
        save_svf_expert(rd.svf_expert, svf_state(model), parametrization, base_fp, fingerprint(_merged_targets(model)))
        written.append(rd.svf_expert)
    if isinstance(model, PeftModel):
        expert_fp = fingerprint(_lora_base_targets(model))
        base_fp = base_fingerprint or getattr(model, BASE_FINGERPRINT_ATTR, expert_fp)
        method = "palora" if projected_modules(model) else "lora"
        path = rd.root / ADAPTER_DIR
        with atomic_path(path, is_dir=True) as tmp:
            model.save_pretrained(str(tmp), state_dict=projected_state_dict(model))
            stamp_adapter(tmp, base_fp, expert_fp, method)
        written.append(path)
    if not written:
        raise PaloraError(f"{type(model).__name__} carries neither SVF layers nor a peft LoRA: nothing to save")
    return written


class SaveAdapterCallback(TrainerCallback):
    """Save only the adapter (see :func:`save_adapter`) at every trainer save and at the end of training.

    On the main process only. Before the first step it checks that the optimizer does not
    weight-decay the SVF scales ``z`` (:func:`check_no_decay`).
    """

    def __init__(self, output_dir: str | Path, base_fingerprint: str | None = None):
        self.output_dir = Path(output_dir)
        self.base_fingerprint = base_fingerprint
        self.saved_step: int | None = None
        self.written: list[Path] = []

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                       **kwargs) -> None:
        if model is not None and optimizer is not None:
            check_no_decay(model, optimizer)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                model: nn.Module | None = None, **kwargs) -> None:
        self._save(state, model)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: nn.Module | None = None, **kwargs) -> None:
        if self.saved_step != state.global_step:
            self._save(state, model)

    def _save(self, state: TrainerState, model: nn.Module | None) -> None:
        if model is None or not state.is_world_process_zero:
            return
        self.written = save_adapter(model, self.output_dir, self.base_fingerprint)
        self.saved_step = state.global_step
