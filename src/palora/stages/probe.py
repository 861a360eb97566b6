"""The probe stages (``palora probe``): the protected subspaces of the run's expert, one per basis.

- ``probe`` (the paper's probe, for ``palora``, its variants and the ablations): the singular
  components of ``W_z`` that ``probe.score`` and ``probe.rule`` pick → ``subspace.safetensors``,
  ``probe_stats.json``;
- ``probe:activation`` (for ``act-protect``): the top eigenvectors of the skill's input covariance
  through the expert, by ``probe.rule`` → ``subspace-activation.safetensors``,
  ``probe_stats-activation.json``.

Each runs only for the methods that read it (:attr:`palora.methods.base.Method.probe_basis`), on
the main process alone (cheap: no training). What is probed and united (``probe.skill_data``,
``probe.keep_data`` for the activation basis, ``probe.extra_runs``, ``probe.combine``) is :func:`palora.protection.probe_run`'s; the file's
header records which experts went in.
"""

from __future__ import annotations

import functools
import time

from ..config import RunConfig, to_dict
from ..errors import PaloraError
from ..io.artifacts import RunDir, save_subspace, write_json
from ..methods.registry import METHODS
from ..protection import BASES, keeps, other_run_data, probe_run, selection_rule
from ..training.distributed import barrier, is_main
from . import svf
from .engine import Stage, file_digest, read_stages, record, skip_if_done, text_inputs

#: probe keys that only the singular basis reads
_SINGULAR_ONLY = ("score", "store_vectors")


def _extra_expert(run: str) -> dict:
    """What another run's expert contributes to a combined probe: its scales and its skill data."""
    root = RunDir(run).root
    skill_train = None
    try:
        skill_train = other_run_data(run).skill_train
    except PaloraError:  # a missing or broken config: the probe itself says so; the digest records its absence
        pass
    return {"run": str(root.resolve()), "svf_expert": file_digest(str(root / "svf_expert.safetensors")),
            "skill_train": file_digest(skill_train)}


def _inputs(basis: str, cfg: RunConfig) -> dict:
    """The probe settings of ``basis``, and the other skills' data, the kept data (for a basis that
    reads them) and the other experts when there are some (none: the digest of older runs, which
    had none of these keys). The singular probe records ``basis: singular``, as runs did when the
    basis was a setting."""
    p = cfg.probe
    keep = p.keep_data if keeps(basis) else []
    probe = {k: v for k, v in to_dict(p).items() if k not in ("skill_data", "keep_data", "keep_share")
             and (basis == "singular" or k not in _SINGULAR_ONLY)}
    probe["basis"] = basis
    if not p.extra_runs and not p.skill_data and not keep:
        probe = {k: v for k, v in probe.items() if k not in ("extra_runs", "combine", "combine_weights")}
    else:
        probe["extra_runs"] = [_extra_expert(r) for r in p.extra_runs]
        if p.skill_data:
            probe["skill_data"] = [file_digest(f) for f in p.skill_data]
        if keep:
            probe.update(keep_data=[file_digest(f) for f in keep], keep_share=p.keep_share)
    return {"probe": probe, "skill_train": file_digest(cfg.data.skill_train), "seed": cfg.seed, **text_inputs(cfg)}


@functools.cache
def stage_for(basis: str) -> Stage:
    """The probe stage of ``basis`` (``probe`` for singular components, ``probe:<basis>`` otherwise)."""
    key = "probe" if basis == "singular" else f"probe:{basis}"
    return Stage(key, inputs=functools.partial(_inputs, basis), upstream=lambda cfg: [svf.STAGE],
                 outputs=lambda rd: [rd.probe_stats_file(basis), rd.subspace_file(basis)],
                 leaves=lambda rd: [rd.probe_stats_file(basis), rd.subspace_file(basis)])


def bases(cfg: RunConfig) -> list[str]:
    """The bases the run's injection methods read, in :data:`palora.protection.BASES` order."""
    wanted = {METHODS[m].probe_basis for m in cfg.inject.methods}
    return [b for b in BASES if b in wanted]


def run_probe(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    """Every probe the run's methods read (the singular one when none reads any); the other ranks
    wait for the main process's files."""
    out = {}
    for basis in bases(cfg) or ["singular"]:
        stage = stage_for(basis)
        done = skip_if_done(rd, cfg, stage)
        if done is None and is_main():
            _probe(cfg, rd, basis, stage, progress)
        barrier()
        out[stage.key] = read_stages(rd)[stage.key]
    return out


def _probe(cfg: RunConfig, rd: RunDir, basis: str, stage: Stage, progress: bool) -> None:
    start = time.perf_counter()
    probed = probe_run(cfg, rd, basis, progress)
    rule = selection_rule(cfg)
    score = cfg.probe.score if basis == "singular" else "eigenvalue"
    save_subspace(rd.subspace_file(basis), probed.subspaces, probed.base_fingerprint, probed.expert_fingerprint, rule.describe(),
                  score, cfg.probe.store_vectors, basis, experts=probed.experts, combine=cfg.probe.combine)
    write_json(rd.probe_stats_file(basis), probed.stats)
    info = {"wall_time_s": round(time.perf_counter() - start, 2), "rule": rule.describe(), "basis": basis,
            "score": score, "protected": probed.stats["selected"], "protected_fraction": probed.stats["fraction"],
            "in_top_block": probed.stats["in_top_block"]}
    if probed.experts is not None:
        info.update(experts=len(probed.experts), combine=cfg.probe.combine)
    record(rd, cfg, stage, info)
