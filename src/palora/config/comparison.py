"""``palora compare``'s section: the methods, seeds and learning-rate grids of the comparison,
and its protected-budget sweep (never part of a stage digest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..methods.registry import METHODS
from .fields import check_value, documented


@dataclass
class CompareConfig:
    methods: list[str] = documented(list(METHODS), f"methods compared under one budget: {', '.join(METHODS)}")
    seeds: list[int] = documented([0, 1, 2], "seeds; each has its own SVF expert, and every method runs on it")
    lr_grid: list[float] = documented(
        [1e-3, 3e-3], "learning rates tried for every adapter method on the first seed (validation splits)"
    )
    full_lr_grid: list[float] = documented([3e-5, 1e-4], "learning rates tried for full-mlp")
    svd_init_lr_grid: list[float] = documented(
        [3e-3, 1e-3, 3e-4, 1e-4], "learning rates tried for pissa and corda-kpm, whose adapters start on the "
        "largest singular components (PiSSA) or carry the inverse input covariance (CorDA): larger steps per rate"
    )
    select: Literal["balanced", "recall"] = documented(
        "balanced", "how the learning rate is chosen on validation: balanced = highest (retention + recall) / 2; "
        "recall = highest new-fact recall"
    )
    budget_fractions: list[float] = documented(
        [0.1, 0.25, 0.5, 0.75], "budget sweep: shares of the components protected per matrix (0 is lora)"
    )
    budget_methods: list[str] = documented(
        ["palora", "protect-top", "protect-random"], "methods of the budget sweep (at their chosen learning rate)"
    )
    budget_seeds: list[int] = documented([0], "seeds of the budget sweep")

    def __post_init__(self) -> None:
        for key, names in (("compare.methods", self.methods), ("compare.budget_methods", self.budget_methods)):
            for m in names:
                check_value(m in METHODS, key, m, f"unknown method; known: {', '.join(METHODS)}")
            check_value(len(set(names)) == len(names), key, names, "repeated")
        check_value(len(self.methods) > 0, "compare.methods", self.methods, "name at least one method")
        check_value(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "compare.seeds", self.seeds,
                    "name at least one seed, each once")
        for key, grid in (("compare.lr_grid", self.lr_grid), ("compare.full_lr_grid", self.full_lr_grid),
                          ("compare.svd_init_lr_grid", self.svd_init_lr_grid)):
            check_value(len(grid) > 0 and all(lr > 0 for lr in grid), key, grid, "name at least one positive rate")
        check_value(all(0 <= f <= 1 for f in self.budget_fractions), "compare.budget_fractions",
                    self.budget_fractions, "must be in [0, 1]")
