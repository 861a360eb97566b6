"""The inject stages (``palora inject``), ``inject:<method>``: the facts into the expert with each
method; each method's adapter (``methods/<method>/adapter/``, a plain peft LoRA adapter for the
expert) and merged model.

Every method starts from the same expert, seed and budget (rank, alpha, steps, batch, learning
rate) and goes through the one injection path (:mod:`palora.injection`); what each method keeps
its update off comes from :mod:`palora.protection`: the probe file of its basis (written by
``palora probe``), or as many top or random components per matrix as the singular probe.

With ``inject.protect_adapter`` (a second round of facts) every method starts from the expert
with that earlier adapter merged, and its update is also kept off the earlier update's column and
row spaces; ``inject.protect_adapter_side=none`` starts from the same model unprotected.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from transformers import set_seed

from ..config import RunConfig, require, to_dict
from ..core.orthogonal import projected_state_dict
from ..core.targets import find_targets
from ..errors import ArtifactError
from ..injection import inject
from ..io.artifacts import ADAPTER_FILES, RunDir, atomic_path, stamp_adapter
from ..io.data import load_train, tokenize_train
from ..io.metrics_log import MetricsLog
from ..io.models import hub_id, load_tokenizer
from ..methods.registry import METHODS
from ..protection import RunProbes, kept_off, skill_batches, skill_subspaces, start_model, target_fingerprint
from ..replay import check_replay, with_replay
from ..report.model_card import adapter_card
from ..training.checkpoint import CheckpointSpec, discard_checkpoint
from ..training.distributed import barrier, is_main
from . import probe, svf
from .engine import (
    Stage,
    data_file,
    digest,
    file_digest,
    folder_digest,
    read_stages,
    record,
    skip_if_done,
    text_inputs,
    train_inputs,
)

#: InjectConfig keys not every method reads: the methods' own (Method.reads), the list of methods
_NOT_COMMON = ("methods", "protect_adapter_side", "penalty_weight", "replay_share")


def _inputs(method: str, cfg: RunConfig) -> dict:
    """The injection settings, and what this method alone reads (so that, e.g., the penalty's weight
    leaves the other methods' digests alone); the earlier round's adapter by its bytes."""
    inject = {k: v for k, v in to_dict(cfg.inject).items() if k not in _NOT_COMMON}
    inject["train"] = train_inputs(cfg.inject.train)
    inject.update({k: getattr(cfg.inject, k) for k in METHODS[method].reads})
    if METHODS[method].replays:
        inject["replay_data"] = [file_digest(f) for f in cfg.probe.keep_data]
    if cfg.inject.protect_adapter:
        inject["protect_adapter_side"] = cfg.inject.protect_adapter_side
        inject["protect_adapter_files"] = folder_digest(cfg.inject.protect_adapter, ADAPTER_FILES)
    return {"inject": inject, "knowledge_train": file_digest(cfg.data.knowledge_train), "seed": cfg.seed,
            "save_merged": cfg.save_merged, **text_inputs(cfg)}


def _upstream(method: str, cfg: RunConfig) -> list[Stage]:
    basis = METHODS[method].probe_basis
    return [svf.STAGE] if basis is None else [svf.STAGE, probe.stage_for(basis)]


@functools.cache
def stage_for(method: str) -> Stage:
    key = f"inject:{method}"
    return Stage(key, inputs=functools.partial(_inputs, method), upstream=functools.partial(_upstream, method),
                 outputs=lambda rd: [rd.method(method), rd.checkpoint(key), rd.tensorboard(key)],
                 leaves=lambda rd: [rd.method(method)])


def run_inject(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    check_replay(cfg, cfg.inject.methods)  # before the first method trains
    examples = load_train(require(cfg.data.knowledge_train, "data.knowledge_train", "--knowledge-train"))
    log = MetricsLog(rd.root, cfg.log, to_dict(cfg))  # a missing tracker package fails here, before training
    if not rd.expert_model.is_dir():
        raise ArtifactError(f"{rd.expert_model} does not exist: run `palora svf --out {rd.root}` first")
    tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
    items = tokenize_train(examples, tok, cfg.data.max_length, cfg.data.chat_template)
    base_fp = read_stages(rd).get("svf", {}).get("base_fingerprint", "")
    results = {}
    for name in cfg.inject.methods:
        stage = stage_for(name)
        done = skip_if_done(rd, cfg, stage)
        if done is not None:
            results[name] = done
            continue
        begin = time.perf_counter()
        set_seed(cfg.seed)
        start = start_model(cfg, rd)
        method = METHODS[name]
        skill = skill_subspaces(method, RunProbes(cfg, rd, start.expert_fingerprint), cfg.seed)
        targets_fp = target_fingerprint(start.model, cfg)  # of the start: the expert, or the expert + an earlier round
        subspaces, side = kept_off(method, cfg, skill, start, find_targets(start.model, cfg.model.target_modules))
        injected = inject(method, start.model, with_replay(name, cfg, items, tok), tok.pad_token_id, cfg, subspaces, side,
                      reload=lambda: start_model(cfg, rd).model, stage=stage.key,
                      skill_batches=lambda: skill_batches(cfg, tok), log=log, progress=progress,
                      checkpoint=CheckpointSpec(rd.checkpoint(stage.key), cfg.inject.train.checkpoint_every,
                                                digest(cfg, stage)),
                      earlier=start.earlier,
                      on_step=_snapshots(cfg, rd, name, base_fp, targets_fp))
        info = injected.info
        if start.earlier is not None:
            info["protect_adapter"] = cfg.inject.protect_adapter
        if is_main():  # one writer; the other ranks wait until the files are there
            with atomic_path(rd.adapter(name), is_dir=True) as tmp:
                injected.model.save_pretrained(tmp)
                stamp_adapter(tmp, base_fp, targets_fp, name)
                write_adapter_card(cfg, rd, name, {**info, "protect_adapter": cfg.inject.protect_adapter}, Path(tmp))
            if cfg.save_merged:
                merged = injected.model.merge_and_unload()
                with atomic_path(rd.merged_model(name), is_dir=True) as tmp:
                    merged.save_pretrained(tmp)
                    tok.save_pretrained(tmp)
            info["wall_time_s"] = round(time.perf_counter() - begin, 2)
            record(rd, cfg, stage, info)
            discard_checkpoint(rd.checkpoint(stage.key))
        barrier()
        results[name] = info
    return results


def _snapshots(cfg: RunConfig, rd: RunDir, name: str, base_fp: str, targets_fp: str):
    """With ``inject.snapshot_every``: a step hook that saves the adapter as trained so far, every
    that many steps before the last, as a plain peft adapter stamped like the method's own
    (``methods/<name>/snapshots/step-NNNNNN/``, written whole or not at all, by the main process)."""
    every = cfg.inject.snapshot_every
    if every is None:
        return None

    def save(step: int, model) -> None:
        if step % every or step >= cfg.inject.train.steps or not is_main():
            return
        with atomic_path(rd.snapshot(name, step), is_dir=True) as tmp:
            model.save_pretrained(tmp, state_dict=projected_state_dict(model))
            stamp_adapter(tmp, base_fp, targets_fp, name)

    return save


def write_adapter_card(cfg: RunConfig, rd: RunDir, method: str, info: dict, folder: Path) -> None:
    """The adapter names its expert by an absolute path (so that it loads from any directory) and
    gets a model card (``README.md``) in place of peft's empty template."""
    config = folder / "adapter_config.json"
    expert = str(rd.expert_model.resolve())
    config.write_text(json.dumps({**json.loads(config.read_text(encoding="utf-8")),
                                  "base_model_name_or_path": expert}, indent=2) + "\n", encoding="utf-8")
    facts = data_file("knowledge_train", cfg.data.knowledge_train)
    card = adapter_card(cfg, method, info, read_stages(rd), facts, str(rd.adapter(method).resolve()), expert,
                        hub_id(cfg.model.name))
    (folder / "README.md").write_text(card, encoding="utf-8")
