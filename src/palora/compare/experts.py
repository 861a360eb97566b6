"""Per seed of a comparison: the SVF expert (trained once, in its own run directory) and its probes.

``<out>/seed<N>/`` is an ordinary run directory: ``palora svf`` resumes and skips it the same way,
and one made with other settings is refused, not reused. The probes are computed in memory by
:mod:`palora.protection` (what ``palora probe`` would save) and kept for one seed at a time.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from pathlib import Path

from torch import nn

from ..config import RunConfig, save
from ..core.subspace import Subspace
from ..core.targets import Target
from ..io.artifacts import RunDir
from ..io.models import load_model
from ..methods.base import Method
from ..protection import base_targets, probe_run, skill_subspaces
from ..stages.opening import locked, open_run
from ..stages.svf import run_svf


class Experts:
    """``locks`` holds each seed's run directory (:func:`palora.stages.opening.locked`) until the
    comparison ends, so that no other command writes into it meanwhile."""

    def __init__(self, cfg: RunConfig, root: Path, progress: bool, locks: ExitStack):
        self.cfg, self.root, self.progress, self.locks = cfg, root, progress, locks
        self.ready: dict[int, RunDir] = {}
        self.cache: dict[tuple, dict[str, Subspace]] = {}

    def config(self, seed: int) -> RunConfig:
        return dataclasses.replace(self.cfg, seed=seed, out=str(self.root / f"seed{seed}"))

    def run_dir(self, seed: int) -> RunDir:
        if seed not in self.ready:
            cfg, rd = self.config(seed), RunDir(self.root / f"seed{seed}")
            self.locks.enter_context(locked(rd))
            open_run(rd, cfg, overwrite=False)  # an expert made with other settings is refused, not reused
            rd.root.mkdir(parents=True, exist_ok=True)
            save(cfg, rd.config)
            run_svf(cfg, rd, self.progress)
            self.ready[seed] = rd
        return self.ready[seed]

    def load_expert(self, seed: int) -> nn.Module:
        return load_model(self.cfg.model, path=str(self.run_dir(seed).expert_model))

    def protected(self, method: Method, jcfg: RunConfig) -> dict[str, Subspace] | None:
        """The subspaces ``method`` protects on the job's expert (``jcfg``: its seed, share, rule)."""
        if method.protects is None:
            return None
        p = jcfg.probe
        key = (jcfg.seed, method.protects, p.rule, p.fraction, p.k, p.threshold, p.energy)
        if key not in self.cache:
            self.cache = {k: v for k, v in self.cache.items() if k[0] == jcfg.seed}  # keep one seed's
            self.cache[key] = skill_subspaces(method, _Probes(self, jcfg), jcfg.seed)
        return self.cache[key]


class _Probes:
    """The probes of one job's expert, computed on demand (:class:`palora.protection.Probes`)."""

    def __init__(self, experts: Experts, jcfg: RunConfig):
        self.experts, self.cfg = experts, jcfg

    def get(self, basis: str) -> dict[str, Subspace]:
        cfg, p = self.cfg, self.cfg.probe
        key = (cfg.seed, f"probe:{basis}", p.rule, p.fraction, p.k, p.threshold, p.energy)
        cache = self.experts.cache
        if key not in cache:
            rd = self.experts.run_dir(cfg.seed)
            cache[key] = probe_run(dataclasses.replace(cfg, out=str(rd.root)), rd, basis, progress=False).subspaces
        return cache[key]

    def base_targets(self) -> list[Target]:
        return base_targets(self.cfg)
