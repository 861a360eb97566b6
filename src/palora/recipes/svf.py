"""Stage 1: train the SVF expert on the skill data, save its scales and its merged model.

``svf.objective=sft`` trains on the completions' next-token loss (``svf.train``);
``reinforce`` by the policy gradient of :mod:`palora.reinforce` (``svf.reinforce``), on one
process. Both go through the one training loop, checkpoints and resume included.
"""

from __future__ import annotations

import time

from transformers import set_seed

from ..artifacts import RunDir, atomic_path, load_svf_expert, save_svf_expert
from ..checkpoint import CheckpointSpec, discard_checkpoint
from ..config import RunConfig, to_dict
from ..data import TrainCollator, load_train, tokenize_train
from ..distributed import barrier, is_main, split_svd, world_size
from ..errors import ConfigError
from ..metrics_log import MetricsLog
from ..models import load_model, load_model_and_tokenizer
from ..reinforce import PromptCollator, ReinforceObjective, prompt_items
from ..svf import add_svf, load_svf_state, merge_svf, svf_state
from ..training import full_trainable_state, train
from .common import load_trained, record_stage, require, target_fingerprint
from .run_state import digest, is_done, read_stages, say_done


def run_svf(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    if is_done(rd, cfg, "svf"):
        say_done(rd, "svf")
        return read_stages(rd)["svf"]
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
        collator, train_cfg, loss_fn = TrainCollator(tok.pad_token_id), cfg.svf.train, None
    result = train(model, items, collator, train_cfg, seed=cfg.seed, stage="svf", log=log, progress=progress,
                   checkpoint=CheckpointSpec(rd.checkpoint("svf"), train_cfg.checkpoint_every, digest(cfg, "svf")),
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
        record_stage(rd, cfg, "svf", info)
        discard_checkpoint(rd.checkpoint("svf"))
    barrier()
    return info
