"""What ``palora compare`` runs, in order: the jobs (seed, method, rate, protected share, phase).

1. **grid** (first seed): every method at every learning rate of its family's grid
   (``compare.lr_grid`` for adapters, ``compare.svd_init_lr_grid`` for PiSSA / CorDA,
   ``compare.full_lr_grid`` for ``full-mlp``), evaluated on the validation and test splits; the
   grid's first rate for every method, then its second, ...: a partial grid is a whole table;
2. **choice**: per method the rate with the best validation score (``compare.select``); the
   test splits play no part in it;
3. **seeds**: the other seeds, each method at its chosen rate, on the test splits;
4. **budget**: for ``compare.budget_methods``, the protected share swept over
   ``compare.budget_fractions`` at the chosen rate (``compare.budget_seeds``); share 0 is plain
   LoRA at the same rate (on the first seed, the grid's row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..methods.registry import METHODS
from .table import choose_lr, with_retention


@dataclass(frozen=True)
class Job:
    seed: int
    method: str
    lr: float | None  # None: svf (nothing trained)
    fraction: float | None  # None: the probe's own protected share
    phase: str  # grid | seeds | budget

    def key(self) -> tuple:
        return (self.seed, self.method, self.lr, self.fraction)


def grid_of(cfg: RunConfig, method: str) -> list[float | None]:
    family = METHODS[method].lr_family
    return {"none": [None], "full": cfg.compare.full_lr_grid, "svd-init": cfg.compare.svd_init_lr_grid,
            "adapter": cfg.compare.lr_grid}[family]


def plan(cfg: RunConfig, rows: list[dict[str, Any]]) -> tuple[list[Job], dict[str, float | None]]:
    """The jobs still possible to name now (later phases need the grid's choice) and that choice."""
    c = cfg.compare
    first = c.seeds[0]
    methods = list(dict.fromkeys(["svf", *c.methods]))  # retention needs the expert's own row
    width = max(len(grid_of(cfg, m)) for m in methods)
    jobs = [Job(first, m, grid_of(cfg, m)[i], None, "grid") for i in range(width) for m in methods
            if i < len(grid_of(cfg, m))]
    scored = with_retention(rows)
    chosen = {m: (None if METHODS[m].lr_family == "none" else choose_lr(scored, m, first, c.select)) for m in methods}
    ready = [m for m in methods if METHODS[m].lr_family == "none" or chosen[m] is not None]
    jobs += [Job(s, m, chosen[m], None, "seeds") for s in c.seeds[1:] for m in ready]
    for s in c.budget_seeds:
        if s not in c.seeds:
            jobs.append(Job(s, "svf", None, None, "budget"))
        if s != first:  # share 0 is plain LoRA at each swept method's rate (the first seed's grid has them all)
            have = {chosen.get("lora")} if s in c.seeds else set()  # the seeds phase ran LoRA's own rate
            rates = sorted({chosen[m] for m in c.budget_methods if chosen.get(m) is not None} - have, reverse=True)
            jobs += [Job(s, "lora", lr, None, "budget") for lr in rates]
        for m in c.budget_methods:
            if chosen.get(m) is None:
                continue
            for f in c.budget_fractions:
                if f == 0:  # protecting nothing is plain LoRA
                    continue
                own = f == cfg.probe.fraction and cfg.probe.rule == "fraction" and s in c.seeds
                if not own:
                    jobs.append(Job(s, m, chosen[m], f, "budget"))
    return jobs, chosen
