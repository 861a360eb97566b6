"""The ``svf`` stage (``palora svf``): train the SVF expert on the skill data, save its scales and its merged model.

``svf.objective=sft`` trains on the completions' next-token loss (``svf.train``);
``reinforce`` by the policy gradient of :mod:`palora.training.reinforce` (``svf.reinforce``), on one
process. Both go through the one training loop, checkpoints and resume included.
"""

from __future__ import annotations

import time

from transformers import set_seed

from ..config import RunConfig, require, to_dict
from ..core.svf import add_svf, load_svf_state, merge_svf, svf_state
from ..errors import ConfigError
from ..io.artifacts import RunDir, atomic_path, load_svf_expert, save_svf_expert
from ..io.data import load_train, tokenize_train
from ..io.metrics_log import MetricsLog
from ..io.models import load_model, load_model_and_tokenizer
from ..protection import target_fingerprint
from ..training.checkpoint import CheckpointSpec, discard_checkpoint
from ..training.distributed import barrier, is_main, split_svd, world_size
from ..training.loop import full_trainable_state, load_trained, train
from ..training.packing import train_collator
from ..training.reinforce import PromptCollator, ReinforceObjective, prompt_items
from . import data
from .engine import Stage, digest, file_digest, record, skip_if_done, text_inputs, train_inputs


def inputs(cfg: RunConfig) -> dict:
    """The base model, the seed, the skill data and the SVF settings that shape the expert: the
    objective's own optimisation only, and no ``objective`` key for ``sft`` (so a run made before
    the objective existed keeps its digest); ``init_from`` by its bytes."""
    svf = {k: v for k, v in to_dict(cfg.svf).items() if k not in ("train", "objective", "reinforce", "init_from")}
    if cfg.svf.init_from:  # the starting scales, by their bytes (absent: the digest of older runs)
        svf["init_from"] = file_digest(cfg.svf.init_from)
    if cfg.svf.objective == "sft":
        svf = {**svf, "train": train_inputs(cfg.svf.train)}
    else:
        svf = {**svf, "objective": cfg.svf.objective, "reinforce": train_inputs(cfg.svf.reinforce),
               "checker": cfg.data.skill_checker}
    return {"model": to_dict(cfg.model), "seed": cfg.seed, "skill_train": file_digest(cfg.data.skill_train),
            "svf": svf, **text_inputs(cfg)}


STAGE = Stage("svf", inputs=inputs, upstream=lambda cfg: [data.STAGE],
              outputs=lambda rd: [rd.svf_expert, rd.expert_model, rd.checkpoint("svf"), rd.tensorboard("svf")],
              leaves=lambda rd: [rd.svf_expert, rd.expert_model])


def run_svf(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    done = skip_if_done(rd, cfg, STAGE)
    if done is not None:
        return done
    start = time.perf_counter()
    set_seed(cfg.seed)
    data_path = require(cfg.data.skill_train, "data.skill_train", "--skill-train")
    log = MetricsLog(rd.root, cfg.log, to_dict(cfg))  # a missing tracker package fails here, before training
    examples = load_train(data_path)
    model, tok = load_model_and_tokenizer(cfg.model)
    base_fp = target_fingerprint(model, cfg)

    add_svf(model, cfg.svf.parametrization, cfg.model.target_modules, cfg.svf.t2_init, progress=progress,
            decompose=split_svd)  # each rank decomposes its share of the matrices
    if cfg.svf.init_from:  # start from another expert's scales (same base: the fingerprint is checked)
        state, meta = load_svf_expert(cfg.svf.init_from, base_fp)
        if meta.get("parametrization") != cfg.svf.parametrization:
            raise ConfigError(f"svf.init_from={cfg.svf.init_from} holds {meta.get('parametrization')} scales; "
                              f"this run trains {cfg.svf.parametrization}")
        load_svf_state(model, state)
    if cfg.svf.objective == "reinforce":
        if world_size() > 1:
            raise ConfigError("svf.objective=reinforce runs on one process (launch without accelerate/torchrun)")
        items = prompt_items(examples, tok, cfg.data.chat_template, cfg.data.skill_checker)
        collator, train_cfg = PromptCollator(tok.pad_token_id), cfg.svf.reinforce
        loss_fn = ReinforceObjective(tok, cfg.svf.reinforce, cfg.data.skill_checker)
    else:
        items = tokenize_train(examples, tok, cfg.data.max_length, cfg.data.chat_template)
        collator, train_cfg, loss_fn = train_collator(model, tok.pad_token_id, cfg.data.padding_free), cfg.svf.train, None
    result = train(model, items, collator, train_cfg, seed=cfg.seed, stage="svf", log=log, progress=progress,
                   checkpoint=CheckpointSpec(rd.checkpoint("svf"), train_cfg.checkpoint_every, digest(cfg, STAGE)),
                   loss_fn=loss_fn)

    if result.sharded:  # FSDP2 shards: the same model, rebuilt whole, with the trained scales
        trained = full_trainable_state(model)
        model = load_model(cfg.model)
        add_svf(model, cfg.svf.parametrization, cfg.model.target_modules, cfg.svf.t2_init, progress=False,
                decompose=split_svd)
        load_trained(model, trained)
    state = svf_state(model)
    merge_svf(model)
    expert_fp = target_fingerprint(model, cfg)
    info = {
        "wall_time_s": round(time.perf_counter() - start, 2),
        "train_time_s": round(result.wall_time_s, 2),
        "trainable_parameters": result.trainable_parameters,
        "processes": world_size(),
        "sharded": result.sharded,
        "objective": cfg.svf.objective,
        "final_loss": result.final_loss,
        "base_fingerprint": base_fp,
        "expert_fingerprint": expert_fp,
    }
    if is_main():  # one writer; the other ranks wait until the files are there
        save_svf_expert(rd.svf_expert, state, cfg.svf.parametrization, base_fp, expert_fp)
        with atomic_path(rd.expert_model, is_dir=True) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        record(rd, cfg, STAGE, info)
        discard_checkpoint(rd.checkpoint("svf"))
    barrier()
    return info
