"""Which directions a method's update must stay off: the only place that turns a method and a run
into protected subspaces, loading and fingerprint checks included.

**Probing** (``palora probe`` writes the result; ``palora compare`` keeps it in memory). A basis
is probed on the SVF expert of a run with the run's ``probe.*`` rule:

- ``singular`` (the paper's probe, :func:`palora.core.probe.select_subspace`): per matrix the
  singular components of ``W_z`` with the best ``probe.score`` (from the scales ``s``, and for the
  data scores from the skill data through the unmerged expert);
- ``activation`` (:func:`palora.core.covariance.activation_subspaces`): per matrix the top
  eigenvectors of the skill's input covariance through the merged expert.

With ``probe.skill_data`` the expert is probed once per skill's data, with ``probe.keep_data``
(activation basis) once per file of what else the model must keep (general text, known facts),
with ``probe.extra_runs`` the experts of other runs of the same base model too (each with its own
skill data); the selections are united by ``probe.combine`` (:mod:`palora.core.combine`), a
weighted union splitting one probe's budget among them (always so with kept data).

**A method's protected set** (:func:`skill_subspaces`): the probe of its basis, or for ``top`` /
``random`` as many components per matrix as the singular probe picks, the principal or random
ones; for ``residual`` the singular probe's components and the base weights' null spaces
(:func:`palora.core.subspace.with_null_spaces`). **Earlier rounds** (``inject.protect_adapter``,
:func:`kept_off`): the earlier update's column and row spaces, united with the skill's, from the
start model with that round merged.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import PeftModel
from torch import nn

from .config import DataConfig, RunConfig, load, require
from .core.combine import shares, unite
from .core.covariance import activation_subspaces
from .core.linalg import fingerprint, iter_svd
from .core.probe import (
    DATA_SCORES,
    SelectionRule,
    same_budget_indices,
    select_subspace,
    singular_subspaces,
    spectrum_stats,
)
from .core.statistics import activation_energy, fisher_information, input_covariance
from .core.subspace import Subspace, from_groups, stores_vectors, with_null_spaces
from .core.svf import add_svf, load_svf_state, svf_layers
from .core.targets import Target, find_targets, weight_matrix
from .core.update_spaces import UpdateSpaces, adapter_spaces, protected_spaces
from .errors import ArtifactError, FingerprintError, ModelError
from .io.artifacts import RunDir, check_adapter, load_subspace, load_svf_expert
from .io.data import TrainCollator, batches, load_train, tokenize_train
from .io.models import load_model, load_model_and_tokenizer, load_tokenizer
from .methods.base import Method

BASES = ("singular", "activation")


def target_fingerprint(model: nn.Module, cfg: RunConfig) -> str:
    return fingerprint(find_targets(model, cfg.model.target_modules))


def selection_rule(cfg: RunConfig) -> SelectionRule:
    """The probe's rule: every :class:`SelectionRule` field from the ``probe.*`` key of the same name."""
    return SelectionRule(**{f.name: getattr(cfg.probe, f.name) for f in dataclasses.fields(SelectionRule)})


def skill_batches(cfg: RunConfig, tok) -> list[dict[str, torch.Tensor]]:
    """The first ``probe.stat_batches`` batches of the skill training data, in the run's order."""
    path = require(cfg.data.skill_train, "data.skill_train", "--skill-train")
    items = tokenize_train(load_train(path), tok, cfg.data.max_length, cfg.data.chat_template)
    collate = TrainCollator(tok.pad_token_id)
    stream = batches(items, cfg.probe.stat_batch_size, seed=cfg.seed)
    return [collate(b) for b in itertools.islice(stream, cfg.probe.stat_batches)]


def skill_statistics(cfg: RunConfig, state: dict, parametrization: str, progress: bool) -> dict[str, torch.Tensor]:
    """Activation energy or Fisher information of the skill data, through the (unmerged) expert."""
    model, tok = load_model_and_tokenizer(cfg.model)
    add_svf(model, parametrization, cfg.model.target_modules, progress=False)
    load_svf_state(model, state)
    data = skill_batches(cfg, tok)
    if DATA_SCORES[cfg.probe.score] == "fisher":
        return fisher_information(model, data, progress)
    return activation_energy(model, data, progress)


# ----------------------------------------------------------------------------- probing


@dataclass
class Probed:
    """A probe's result: the subspaces, the selection's statistics, and the header of its file."""

    subspaces: dict[str, Subspace]
    stats: dict[str, Any]
    base_fingerprint: str
    expert_fingerprint: str
    experts: list[dict[str, str]] | None = None  # several selections united: one record each


def probe_expert(cfg: RunConfig, rd: RunDir, basis: str, base: nn.Module, base_fp: str, rule: SelectionRule,
                 progress: bool) -> Probed:
    """The subspaces of ``basis`` of the expert in ``rd``, by ``rule`` on ``cfg``'s skill data."""
    state, meta = load_svf_expert(rd.svf_expert, base_fp)
    if basis == "activation":
        expert = load_model(cfg.model, path=str(rd.expert_model))
        tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
        targets = find_targets(expert, cfg.model.target_modules)
        cov = input_covariance(expert, skill_batches(cfg, tok), [t.name for t in targets], progress)
        subspaces, stats = activation_subspaces(cov, {t.name: t.shape[0] for t in targets}, rule)
    else:
        data_stats = skill_statistics(cfg, state, meta["parametrization"], progress) \
            if cfg.probe.score in DATA_SCORES else None
        try:
            subspaces, stats = select_subspace(find_targets(base, cfg.model.target_modules), state,
                                               meta["parametrization"], cfg.probe.score, rule, progress, data_stats)
        except (KeyError, ValueError) as e:
            raise ArtifactError(f"SVF expert {rd.svf_expert} does not fit {cfg.model.name}: {e}") from None
    return Probed(subspaces, stats, base_fp, meta.get("expert_fingerprint", ""))


def keeps(basis: str) -> bool:
    """Whether the probe of ``basis`` reads ``probe.keep_data`` (the activation basis; the
    singular probe's scores do not come from inputs other than the skill's)."""
    return basis == "activation"


def selections(cfg: RunConfig, rd: RunDir, basis: str = "singular") -> list[tuple[RunConfig, RunDir, float]]:
    """``(settings, run, budget share)`` of every selection a probe of ``basis`` unites: this run's
    expert once per ``probe.skill_data`` file (else on ``data.skill_train``), then, for the
    activation basis, once per ``probe.keep_data`` file, then each run of ``probe.extra_runs`` with
    this run's settings and that run's data section (its skill data, max_length, template).

    The shares (used with ``probe.combine=weighted``, and always with kept data) are
    ``combine_weights`` normalised over the skill's selections, scaled by ``1 − keep_share`` when
    kept data are probed, which share ``keep_share`` equally."""
    def on(f: str) -> RunConfig:
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, skill_train=f))

    own = [(on(f), rd) for f in cfg.probe.skill_data] or [(cfg, rd)]
    extra = [(dataclasses.replace(cfg, data=other_run_data(run)), RunDir(run)) for run in cfg.probe.extra_runs]
    keep = [(on(f), rd) for f in cfg.probe.keep_data] if keeps(basis) else []
    skill = shares(cfg.probe.combine_weights, len(own) + len(extra))
    if keep:
        skill = [(1 - cfg.probe.keep_share) * w for w in skill]
    kept = [cfg.probe.keep_share / len(keep) for _ in keep]
    parts = [*own, *keep, *extra]
    return [(c, r, w) for (c, r), w in zip(parts, [*skill[:len(own)], *kept, *skill[len(own):]], strict=True)]


def other_run_data(run: str) -> DataConfig:
    """The data section of another run directory's ``config.yaml`` (a run of ``probe.extra_runs``)."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise ArtifactError(f"probe.extra_runs: {run} has no config.yaml (run `palora svf --out {run}` first)")
    return load(path).data


def probe_run(cfg: RunConfig, rd: RunDir, basis: str, progress: bool = True) -> Probed:
    """The protected subspaces of ``basis`` for the run in ``rd``: its expert's selection, or the
    union (``probe.combine``) of every selection of :func:`selections`."""
    experts = selections(cfg, rd, basis)
    for _, r, _ in experts:  # before any model is loaded
        if not r.svf_expert.is_file():
            raise ArtifactError(f"{r.svf_expert} does not exist: run `palora svf --out {r.root}` first")
    base = load_model(cfg.model)
    base_fp = target_fingerprint(base, cfg)
    rule = selection_rule(cfg)
    rules = [rule] * len(experts)
    kept = keeps(basis) and bool(cfg.probe.keep_data)  # kept data always share one budget with the skill
    if len(experts) > 1 and (cfg.probe.combine == "weighted" or kept):
        rules = [rule.scaled(w) for _, _, w in experts]
    parts = [probe_expert(c, r, basis, base, base_fp, ru, progress) for (c, r, _), ru in zip(experts, rules)]
    if len(parts) == 1:
        return parts[0]
    united = unite([p.subspaces for p in parts], basis)
    records = [{"run": str(r.root), "expert_fingerprint": p.expert_fingerprint, "skill_train": c.data.skill_train or "",
                "rule": ru.describe()} for p, (c, r, _), ru in zip(parts, experts, rules)]
    stats = _united_stats(united, basis, [{**p.stats, "run": str(r.root), "data": c.data.skill_train or ""}
                                          for p, (c, r, _) in zip(parts, experts)])
    return Probed(united, stats, base_fp, parts[0].expert_fingerprint, records)


def _united_stats(subspaces: dict[str, Subspace], basis: str, parts: list[dict]) -> dict:
    """Statistics of a united subspace: its size and, for singular components, where they sit."""
    if basis == "singular":
        ranks = {n: p["rank"] for n, p in parts[0]["per_matrix"].items()}
        stats = spectrum_stats({n: s.indices for n, s in subspaces.items()}, ranks)
    else:
        selected, total = sum(s.V.shape[1] for s in subspaces.values()), sum(s.V.shape[0] for s in subspaces.values())
        stats = {"basis": basis, "selected": selected, "total": total, "fraction": selected / total if total else 0.0,
                 "in_top_block": None}
    return {**stats, "experts": parts}


# ----------------------------------------------------------------------------- a method's protected set


class Probes(Protocol):
    """Where a method's protected set comes from: the probes of a run, read or computed."""

    def get(self, basis: str) -> dict[str, Subspace]: ...

    def base_targets(self) -> list[Target]: ...  # of the base model, whose SVD the singular probe sliced


def skill_subspaces(method: Method, probes: Probes, seed: int) -> dict[str, Subspace] | None:
    """The skill's subspaces ``method`` protects (``None``: it protects nothing)."""
    if method.protects is None:
        return None
    probed = probes.get(method.probe_basis)
    if method.protects == "residual":  # the null spaces of the base weights are the expert's too
        return {t.name: with_null_spaces(probed[t.name], weight_matrix(t.module).float())
                for t in probes.base_targets()}
    if method.protects not in ("top", "random"):
        return probed
    targets = probes.base_targets()
    counts = {name: sub.k for name, sub in probed.items()}
    return singular_subspaces(targets, same_budget_indices(counts, {t.name: min(t.shape) for t in targets},
                                                           method.protects, seed))


class RunProbes:
    """The probes ``palora probe`` saved in a run directory, checked to be made for its expert."""

    def __init__(self, cfg: RunConfig, rd: RunDir, expert_fp: str):
        self.cfg, self.rd, self.expert_fp = cfg, rd, expert_fp

    def get(self, basis: str) -> dict[str, Subspace]:
        return load_probe(self.cfg, self.rd.subspace_file(basis), self.expert_fp)

    def base_targets(self) -> list[Target]:
        return base_targets(self.cfg)


def base_targets(cfg: RunConfig) -> list[Target]:
    """The base model's targets (its SVD is the one the singular probe sliced)."""
    return find_targets(load_model(cfg.model), cfg.model.target_modules)


def load_probe(cfg: RunConfig, path: Path, expert_fp: str) -> dict[str, Subspace]:
    """The subspace file ``path`` for the expert with fingerprint ``expert_fp``; vectors recomputed
    from the base weights (which must be the ones probed) when the file stores indices only."""
    grouped, meta = load_subspace(path, None)
    if meta.get("expert_fingerprint") != expert_fp:
        raise ArtifactError(f"subspace {path} was made for another expert (expert_fingerprint "
                            f"{meta.get('expert_fingerprint')}, the expert has {expert_fp})")
    if stores_vectors(grouped):
        return from_groups(grouped)
    base = load_model(cfg.model)
    if target_fingerprint(base, cfg) != meta.get("base_fingerprint"):
        raise ArtifactError(f"subspace {path} stores indices only, and {cfg.model.name} is not its base model")
    return from_groups(grouped, iter_svd(find_targets(base, cfg.model.target_modules)))


def load_for_model(path: str | Path, model: nn.Module) -> tuple[list[Target], dict[str, Subspace], dict[str, str]]:
    """A subspace file for ``model`` (the expert it was probed on, or that expert's base model): the
    targets it names in module order, its subspaces and its header (Trainer / TRL integration)."""
    grouped, meta = load_subspace(path, None)
    targets = [Target(name, module) for name, module in model.named_modules() if name in grouped]
    if len(targets) != len(grouped):
        missing = sorted(set(grouped) - {t.name for t in targets})
        raise FingerprintError(f"subspace {path} names modules this model lacks ({missing[0]}, ...)")
    if svf_layers(model):
        raise ModelError("the model still carries SVF layers: merge_svf(model) first (stage 3 trains on the expert)")
    found = fingerprint(targets)
    accepted = {meta.get("expert_fingerprint"), meta.get("base_fingerprint")} - {None}
    if found not in accepted:
        raise FingerprintError(
            f"subspace {path} was made for other weights (expert {meta.get('expert_fingerprint')}, "
            f"base {meta.get('base_fingerprint')}; this model has {found}): load the model it was probed on"
        )
    if stores_vectors(grouped):
        return targets, from_groups(grouped), meta
    if found == meta.get("base_fingerprint"):  # indices only: the vectors are this model's own
        return targets, from_groups(grouped, iter_svd(targets)), meta
    raise ArtifactError(f"subspace {path} stores indices only: load its base model, not the expert")


# ----------------------------------------------------------------------------- earlier rounds


@dataclass
class Start:
    """The model an injection starts from: the expert, with ``inject.protect_adapter`` merged."""

    model: nn.Module
    expert_fingerprint: str  # of expert_model/ (what the probes and the adapters were made for)
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


def kept_off(method: Method, cfg: RunConfig, skill: dict[str, Subspace] | None, start: Start,
             targets: list[Target]) -> tuple[dict[str, Subspace] | None, str]:
    """What the update is kept off and on which side: the skill's subspaces on the method's side
    (:func:`own_side`); with an earlier round, its spaces united with the skill's on ``inject.side``,
    applied on both sides (the sides are chosen per block by
    :func:`palora.core.update_spaces.protected_spaces`)."""
    earlier_side = cfg.inject.protect_adapter_side
    if start.earlier is None or earlier_side == "none":
        return skill, own_side(method, cfg)
    united = {t.name: protected_spaces(None if skill is None else skill[t.name], start.earlier.get(t.name), t.shape,
                                       cfg.inject.side, earlier_side) for t in targets}
    return united, "both"


def own_side(method: Method, cfg: RunConfig) -> str:
    """The side a method projects its own protected set on: its own, else ``inject.side``."""
    return method.side or cfg.inject.side
