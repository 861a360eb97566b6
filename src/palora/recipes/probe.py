"""Stage 2: score the expert's singular components and save the protected subspace."""

from __future__ import annotations

import itertools
import time

import torch

from ..activation_probe import activation_subspaces
from ..artifacts import RunDir, load_svf_expert, save_subspace, write_json
from ..config import RunConfig
from ..data import TrainCollator, batches, load_train, tokenize_train
from ..distributed import barrier, is_main
from ..errors import ArtifactError
from ..models import load_model, load_model_and_tokenizer, load_tokenizer
from ..probe import DATA_SCORES, SelectionRule, select_subspace
from ..skill_stats import activation_energy, fisher_information, input_covariance
from ..svf import add_svf, load_svf_state
from ..targets import find_targets
from .common import record_stage, require, target_fingerprint
from .run_state import is_done, read_stages, say_done


def selection_rule(cfg: RunConfig) -> SelectionRule:
    p = cfg.probe
    return SelectionRule(rule=p.rule, fraction=p.fraction, k=p.k, threshold=p.threshold, energy=p.energy)


def skill_statistics(cfg: RunConfig, state: dict, parametrization: str, progress: bool) -> dict[str, torch.Tensor]:
    """Activation energy or Fisher information of the skill data, through the (unmerged) expert."""
    model, tok = load_model_and_tokenizer(cfg.model)
    add_svf(model, parametrization, cfg.model.target_modules, progress=False)
    load_svf_state(model, state)
    data = skill_batches(cfg, tok)
    if DATA_SCORES[cfg.probe.score] == "fisher":
        return fisher_information(model, data, progress)
    return activation_energy(model, data, progress)


def skill_batches(cfg: RunConfig, tok) -> list[dict[str, torch.Tensor]]:
    """The first ``probe.stat_batches`` batches of the skill training data, in the run's order."""
    path = require(cfg.data.skill_train, "data.skill_train", "--skill-train")
    items = tokenize_train(load_train(path), tok, cfg.data.max_length, cfg.data.chat_template)
    collate = TrainCollator(tok.pad_token_id)
    stream = batches(items, cfg.probe.stat_batch_size, seed=cfg.seed)
    return [collate(b) for b in itertools.islice(stream, cfg.probe.stat_batches)]


def expert_activation_subspaces(cfg: RunConfig, rd: RunDir, progress: bool) -> tuple[dict, dict]:
    """``probe.basis=activation``: the skill's input covariance through the merged expert."""
    expert = load_model(cfg.model, path=str(rd.expert_model))
    tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
    targets = find_targets(expert, cfg.model.target_modules)
    cov = input_covariance(expert, skill_batches(cfg, tok), [t.name for t in targets], progress)
    return activation_subspaces(cov, {t.name: t.shape[0] for t in targets}, selection_rule(cfg))


def run_probe(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    """Stage 2 (cheap: no training), on the main process alone; the other ranks wait for its file."""
    if is_done(rd, cfg, "probe"):
        say_done(rd, "probe")
        return read_stages(rd)["probe"]
    if is_main():
        _probe(cfg, rd, progress)
    barrier()
    return read_stages(rd)["probe"]


def _probe(cfg: RunConfig, rd: RunDir, progress: bool) -> dict:
    start = time.perf_counter()
    if not rd.svf_expert.is_file():
        raise ArtifactError(f"{rd.svf_expert} does not exist: run `palora svf --out {rd.root}` first")
    model = load_model(cfg.model)
    base_fp = target_fingerprint(model, cfg)
    state, meta = load_svf_expert(rd.svf_expert, base_fp)
    rule = selection_rule(cfg)
    if cfg.probe.basis == "activation":
        subspaces, spectrum = expert_activation_subspaces(cfg, rd, progress)
    else:
        stats = skill_statistics(cfg, state, meta["parametrization"], progress) if cfg.probe.score in DATA_SCORES else None
        try:
            subspaces, spectrum = select_subspace(find_targets(model, cfg.model.target_modules), state,
                                                  meta["parametrization"], cfg.probe.score, rule, progress, stats)
        except (KeyError, ValueError) as e:
            raise ArtifactError(f"SVF expert {rd.svf_expert} does not fit {cfg.model.name}: {e}") from None
    score = cfg.probe.score if cfg.probe.basis == "singular" else "eigenvalue"
    save_subspace(rd.subspace, subspaces, base_fp, meta["expert_fingerprint"], rule.describe(),
                  score, cfg.probe.store_vectors, cfg.probe.basis)
    write_json(rd.probe_stats, spectrum)
    info = {
        "wall_time_s": round(time.perf_counter() - start, 2),
        "rule": rule.describe(),
        "basis": cfg.probe.basis,
        "score": score,
        "protected": spectrum["selected"],
        "protected_fraction": spectrum["fraction"],
        "in_top_block": spectrum["in_top_block"],
    }
    record_stage(rd, cfg, "probe", info)
    return info
