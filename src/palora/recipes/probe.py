"""Stage 2: score the expert's singular components and save the protected subspace.

With ``probe.skill_data`` (one expert trained on several skills) the expert is probed once per
skill's data, and the selections are united the same way.

With ``probe.extra_runs`` the run directories of other SVF experts of the same base model are
probed too, each with its own skill data (from its ``config.yaml``) and this run's probe
settings, and the subspaces are united (:mod:`palora.combine`); the subspace file's header
records which experts went in.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import torch

from ..activation_probe import activation_subspaces
from ..artifacts import RunDir, load_svf_expert, save_subspace, write_json
from ..combine import shares, split_budget, unite
from ..config import RunConfig, load
from ..data import TrainCollator, batches, load_train, tokenize_train
from ..distributed import barrier, is_main
from ..errors import ArtifactError
from ..models import load_model, load_model_and_tokenizer, load_tokenizer
from ..probe import DATA_SCORES, SelectionRule, select_subspace, spectrum_stats
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


def expert_activation_subspaces(cfg: RunConfig, rd: RunDir, progress: bool,
                                rule: SelectionRule | None = None) -> tuple[dict, dict]:
    """``probe.basis=activation``: the skill's input covariance through the merged expert."""
    expert = load_model(cfg.model, path=str(rd.expert_model))
    tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
    targets = find_targets(expert, cfg.model.target_modules)
    cov = input_covariance(expert, skill_batches(cfg, tok), [t.name for t in targets], progress)
    return activation_subspaces(cov, {t.name: t.shape[0] for t in targets}, rule or selection_rule(cfg))


def run_probe(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    """Stage 2 (cheap: no training), on the main process alone; the other ranks wait for its file."""
    if is_done(rd, cfg, "probe"):
        say_done(rd, "probe")
        return read_stages(rd)["probe"]
    if is_main():
        _probe(cfg, rd, progress)
    barrier()
    return read_stages(rd)["probe"]


def own_selections(cfg: RunConfig, rd: RunDir) -> list[tuple[RunConfig, RunDir]]:
    """``(settings, run)`` of each selection of this run's expert: one per ``probe.skill_data`` file
    (this run's settings with that file as the skill data), or this run's alone."""
    return [(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, skill_train=f)), rd)
            for f in cfg.probe.skill_data] or [(cfg, rd)]


def extra_experts(cfg: RunConfig) -> list[tuple[RunConfig, RunDir]]:
    """``(settings, run)`` of every run in ``probe.extra_runs``: this run's settings with that run's
    data section (its skill data, max_length, chat template)."""
    experts = []
    for run in cfg.probe.extra_runs:
        path = Path(run) / "config.yaml"
        if not path.is_file():
            raise ArtifactError(f"probe.extra_runs: {run} has no config.yaml (run `palora svf --out {run}` first)")
        experts.append((dataclasses.replace(cfg, data=load(path).data), RunDir(run)))
    return experts


def expert_subspaces(cfg: RunConfig, rd: RunDir, model, base_fp: str, rule: SelectionRule,
                     progress: bool) -> tuple[dict, dict, dict]:
    """The protected subspace of the expert in ``rd`` by ``rule``: subspaces, statistics, file header."""
    state, meta = load_svf_expert(rd.svf_expert, base_fp)
    if cfg.probe.basis == "activation":
        subspaces, spectrum = expert_activation_subspaces(cfg, rd, progress, rule)
        return subspaces, spectrum, meta
    stats = skill_statistics(cfg, state, meta["parametrization"], progress) if cfg.probe.score in DATA_SCORES else None
    try:
        subspaces, spectrum = select_subspace(find_targets(model, cfg.model.target_modules), state,
                                              meta["parametrization"], cfg.probe.score, rule, progress, stats)
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"SVF expert {rd.svf_expert} does not fit {cfg.model.name}: {e}") from None
    return subspaces, spectrum, meta


def united_stats(subspaces: dict, basis: str, parts: list[dict]) -> dict:
    """Statistics of a united subspace: its size and, for singular components, where they sit."""
    if basis == "singular":
        ranks = {n: p["rank"] for n, p in parts[0]["per_matrix"].items()}
        stats = spectrum_stats({n: s.indices for n, s in subspaces.items()}, ranks)
    else:
        selected, total = sum(s.V.shape[1] for s in subspaces.values()), sum(s.V.shape[0] for s in subspaces.values())
        stats = {"basis": basis, "selected": selected, "total": total, "fraction": selected / total if total else 0.0,
                 "in_top_block": None}
    return {**stats, "experts": parts}


def _probe(cfg: RunConfig, rd: RunDir, progress: bool) -> dict:
    start = time.perf_counter()
    experts = [*own_selections(cfg, rd), *extra_experts(cfg)]
    for _, r in experts:  # before any model is loaded
        if not r.svf_expert.is_file():
            raise ArtifactError(f"{r.svf_expert} does not exist: run `palora svf --out {r.root}` first")
    model = load_model(cfg.model)
    base_fp = target_fingerprint(model, cfg)
    rule = selection_rule(cfg)
    rules = [rule] * len(experts)
    if len(experts) > 1 and cfg.probe.combine == "weighted":
        rules = [split_budget(rule, w) for w in shares(cfg.probe.combine_weights, len(experts))]
    parts = [expert_subspaces(c, r, model, base_fp, ru, progress) for (c, r), ru in zip(experts, rules)]
    subspaces, spectrum, meta = parts[0]
    records = None
    if len(parts) > 1:
        subspaces = unite([p[0] for p in parts], cfg.probe.basis)
        spectrum = united_stats(subspaces, cfg.probe.basis, [{**p[1], "run": str(r.root)}
                                                             for p, (_, r) in zip(parts, experts)])
        records = [{"run": str(r.root), "expert_fingerprint": p[2].get("expert_fingerprint", ""),
                    "skill_train": c.data.skill_train or "", "rule": ru.describe()}
                   for p, (c, r), ru in zip(parts, experts, rules)]
    score = cfg.probe.score if cfg.probe.basis == "singular" else "eigenvalue"
    save_subspace(rd.subspace, subspaces, base_fp, meta["expert_fingerprint"], rule.describe(),
                  score, cfg.probe.store_vectors, cfg.probe.basis, experts=records, combine=cfg.probe.combine)
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
    if records is not None:
        info.update(experts=len(records), combine=cfg.probe.combine)
    record_stage(rd, cfg, "probe", info)
    return info
