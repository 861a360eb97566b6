"""Stage 3: inject the facts into the expert with each method; save adapters and merged models.

Every method starts from the same expert, the same seed and the same budget (rank, alpha, steps,
batch, learning rate). ``lora`` is plain peft LoRA; ``palora`` is the same LoRA with ``A`` and
``B`` projected away from the protected subspace (:mod:`palora.orthogonal`); the other methods
that give an adapter for the expert (its variants, ``olora-penalty``, ``protect-top/random``,
``act-protect``) are built as ``palora compare`` builds them (:mod:`palora.methods`).

With ``inject.protect_adapter`` (a second round of facts) every method starts from the expert
with that earlier adapter merged, and its update is also kept away from the earlier update's
column and row spaces (:mod:`palora.adapter_protection`), united with the skill's subspace for
``palora``; ``inject.protect_adapter_side=none`` starts from the same model unprotected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from peft import PeftModel
from torch import nn
from transformers import set_seed

from ..adapter_protection import UpdateSpaces, adapter_certificate, adapter_spaces, protected_spaces
from ..artifacts import RunDir, atomic_path, check_adapter, load_subspace, stamp_adapter
from ..checkpoint import CheckpointSpec, discard_checkpoint
from ..config import RunConfig, to_dict
from ..data import TrainCollator, load_train, tokenize_train
from ..distributed import barrier, is_main, world_size
from ..errors import ArtifactError
from ..linalg import iter_svd
from ..methods import METHODS, Built, MethodSpec, build_method
from ..methods.protect import covariance_subspaces, same_budget_indices, singular_subspaces
from ..metrics_log import MetricsLog
from ..models import load_model, load_tokenizer
from ..orthogonal import Side, bake_projections, certificate, lora_delta
from ..subspace import Subspace, from_groups, stores_vectors
from ..targets import Target, find_targets
from ..training import full_trainable_state, train
from .common import load_trained, record_stage, require, target_fingerprint
from .probe import skill_batches
from .run_state import digest, is_done, read_stages, say_done


def load_protected(cfg: RunConfig, rd: RunDir, expert_fp: str) -> dict[str, Subspace]:
    """The subspace for the expert with fingerprint ``expert_fp``; vectors recomputed if not stored."""
    grouped, meta = load_subspace(rd.subspace, None)
    if meta.get("expert_fingerprint") != expert_fp:
        raise ArtifactError(
            f"subspace {rd.subspace} was made for another expert (expert_fingerprint "
            f"{meta.get('expert_fingerprint')}, {rd.expert_model} has {expert_fp})"
        )
    if stores_vectors(grouped):
        return from_groups(grouped)
    # indices only: recompute U_S, V_S from the base weights, which must be the ones probed
    base = load_model(cfg.model)
    if target_fingerprint(base, cfg) != meta.get("base_fingerprint"):
        raise ArtifactError(f"subspace {rd.subspace} stores indices only, and {cfg.model.name} is not its base model")
    return from_groups(grouped, iter_svd(find_targets(base, cfg.model.target_modules)))


@dataclass
class Start:
    """The model an injection starts from: the expert, with ``inject.protect_adapter`` merged."""

    model: nn.Module
    expert_fingerprint: str  # of expert_model/ (what the probe's subspace and the adapter were made for)
    earlier: dict[str, UpdateSpaces] | None  # the merged adapter's column and row spaces, per target


def start_model(cfg: RunConfig, rd: RunDir) -> Start:
    """``expert_model/``, and the earlier round's adapter merged into it when ``inject.protect_adapter``
    names one (refused unless it was trained on this very expert)."""
    expert = load_model(cfg.model, path=str(rd.expert_model))
    expert_fp = target_fingerprint(expert, cfg)
    if not cfg.inject.protect_adapter:
        return Start(expert, expert_fp, None)
    check_adapter(cfg.inject.protect_adapter, expert_fp)
    earlier = PeftModel.from_pretrained(expert, cfg.inject.protect_adapter)
    spaces = adapter_spaces(earlier)
    return Start(earlier.merge_and_unload(), expert_fp, spaces)


def protection(cfg: RunConfig, skill: dict[str, Subspace] | None, start: Start,
               targets: list[Target]) -> tuple[dict[str, Subspace] | None, str]:
    """The subspaces the method's LoRA is projected away from, and the side to apply them on."""
    side = cfg.inject.protect_adapter_side
    if start.earlier is None or side == "none":
        return skill, cfg.inject.side
    united = {t.name: protected_spaces(None if skill is None else skill[t.name], start.earlier.get(t.name), t.shape,
                                       cfg.inject.side, side) for t in targets}
    return united, "both"


def method_subspaces(spec: MethodSpec, cfg: RunConfig, rd: RunDir, expert_fp: str, tok) -> dict[str, Subspace] | None:
    """The skill's protected set a method reads: the probe's (``subspace.safetensors``), as many
    top or random components per matrix, or the skill's input-covariance basis; ``None`` for none."""
    if spec.protect == "none":
        return None
    if spec.protect == "activation":
        return covariance_subspaces(cfg, load_model(cfg.model, path=str(rd.expert_model)), tok)[0]
    probed = load_protected(cfg, rd, expert_fp)
    if spec.protect == "probe":
        return probed
    targets = find_targets(load_model(cfg.model), cfg.model.target_modules)  # the base: the probe's SVD
    counts = {name: sub.k for name, sub in probed.items()}
    return singular_subspaces(targets, same_budget_indices(counts, {t.name: min(t.shape) for t in targets},
                                                           spec.protect, cfg.seed))


def _build(spec: MethodSpec, model: nn.Module, cfg: RunConfig, subspaces: dict[str, Subspace] | None, tok,
           side: Side | None) -> Built:
    return build_method(spec, model, find_targets(model, cfg.model.target_modules), cfg, subspaces,
                        skill_batches=lambda: skill_batches(cfg, tok), side=side)


def run_inject(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    data_path = require(cfg.data.knowledge_train, "data.knowledge_train", "--knowledge-train")
    examples = load_train(data_path)
    log = MetricsLog(rd.root, cfg.log, to_dict(cfg))  # a missing tracker package fails here, before training
    if not rd.expert_model.is_dir():
        raise ArtifactError(f"{rd.expert_model} does not exist: run `palora svf --out {rd.root}` first")
    tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
    items = tokenize_train(examples, tok, cfg.data.max_length, cfg.data.chat_template)
    svf_info = read_stages(rd).get("svf", {})
    results = {}
    for method in cfg.inject.methods:
        key = f"inject:{method}"
        if is_done(rd, cfg, key):
            say_done(rd, key)
            results[method] = read_stages(rd)[key]
            continue
        start = time.perf_counter()
        set_seed(cfg.seed)
        origin = start_model(cfg, rd)
        expert = origin.model
        targets = find_targets(expert, cfg.model.target_modules)
        expert_fp = target_fingerprint(expert, cfg)  # of the start: the expert, or the expert + an earlier round
        spec = METHODS[method]
        skill = method_subspaces(spec, cfg, rd, origin.expert_fingerprint, tok)
        subspaces, side = protection(cfg, skill, origin, targets)
        if origin.earlier is None or cfg.inject.protect_adapter_side == "none":
            side = None  # the method's own side (or inject.side)
        built = _build(spec, expert, cfg, subspaces, tok, side)  # seeds torch: the same A for every method
        model = built.model
        result = train(model, items, TrainCollator(tok.pad_token_id), cfg.inject.train, seed=cfg.seed,
                       stage=key, log=log, progress=progress, regularizer=built.regularizer,
                       checkpoint=CheckpointSpec(rd.checkpoint(key), cfg.inject.train.checkpoint_every,
                                                 digest(cfg, key)))
        if result.sharded:  # FSDP2 shards: the same model, rebuilt whole, with the trained adapter
            trained = full_trainable_state(model)
            expert = start_model(cfg, rd).model
            targets = find_targets(expert, cfg.model.target_modules)
            model = load_trained(_build(spec, expert, cfg, subspaces, tok, side).model, trained)
        bake_projections(model)

        info = {"trainable_parameters": result.trainable_parameters, "final_loss": result.final_loss,
                "train_time_s": round(result.wall_time_s, 2), "processes": world_size(), "sharded": result.sharded}
        if subspaces and not spec.penalty:
            ratios = [certificate(lora_delta(model, t.name), subspaces[t.name]) for t in targets]
            info["certificate_out"] = max(r[0] for r in ratios)  # max ‖U_Sᵀ ΔW‖ / ‖ΔW‖
            info["certificate_in"] = max(r[1] for r in ratios)  # max ‖ΔW V_S‖ / ‖ΔW‖
        if origin.earlier is not None:
            info["protect_adapter"] = cfg.inject.protect_adapter
            ratios = [adapter_certificate(lora_delta(model, t.name), origin.earlier[t.name])
                      for t in targets if t.name in origin.earlier]
            info["adapter_certificate_out"] = max(r[0] for r in ratios)  # max ‖U₁ᵀ ΔW₂‖ / ‖ΔW₂‖
            info["adapter_certificate_in"] = max(r[1] for r in ratios)  # max ‖ΔW₂ V₁‖ / ‖ΔW₂‖
        if is_main():  # one writer; the other ranks wait until the files are there
            with atomic_path(rd.adapter(method), is_dir=True) as tmp:
                model.save_pretrained(tmp)
                stamp_adapter(tmp, svf_info.get("base_fingerprint", ""), expert_fp, method)
            if cfg.save_merged:
                merged = model.merge_and_unload()
                with atomic_path(rd.merged_model(method), is_dir=True) as tmp:
                    merged.save_pretrained(tmp)
                    tok.save_pretrained(tmp)
            info["wall_time_s"] = round(time.perf_counter() - start, 2)
            record_stage(rd, cfg, key, info)
            discard_checkpoint(rd.checkpoint(key))
        barrier()
        results[method] = info
    return results
