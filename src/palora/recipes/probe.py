"""Stage 2: score the expert's singular components and save the protected subspace."""

from __future__ import annotations

import time

from ..artifacts import RunDir, load_svf_expert, save_subspace, write_json
from ..config import RunConfig
from ..errors import ArtifactError
from ..models import load_model
from ..probe import SelectionRule, select_subspace
from ..targets import find_targets
from .common import record_stage, target_fingerprint


def selection_rule(cfg: RunConfig) -> SelectionRule:
    p = cfg.probe
    return SelectionRule(rule=p.rule, fraction=p.fraction, k=p.k, threshold=p.threshold, energy=p.energy)


def run_probe(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    start = time.perf_counter()
    model = load_model(cfg.model)
    base_fp = target_fingerprint(model, cfg)
    state, meta = load_svf_expert(rd.svf_expert, base_fp)
    rule = selection_rule(cfg)
    try:
        subspaces, stats = select_subspace(find_targets(model, cfg.model.target_modules), state,
                                           meta["parametrization"], cfg.probe.score, rule, progress)
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"SVF expert {rd.svf_expert} does not fit {cfg.model.name}: {e}") from None
    save_subspace(rd.subspace, subspaces, base_fp, meta["expert_fingerprint"], rule.describe(),
                  cfg.probe.score, cfg.probe.store_vectors)
    write_json(rd.probe_stats, stats)
    info = {
        "wall_time_s": round(time.perf_counter() - start, 2),
        "rule": rule.describe(),
        "score": cfg.probe.score,
        "protected": stats["selected"],
        "protected_fraction": stats["fraction"],
        "in_top_block": stats["in_top_block"],
    }
    record_stage(rd, "probe", info)
    return info
