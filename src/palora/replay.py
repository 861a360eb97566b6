"""Replay, the usual advice against forgetting: a share of the training lines comes from what the
model already knows (``probe.keep_data``: general text it wrote itself, the protect split of known
facts) instead of the new facts, under the same budget (rank, steps, batch, rate).

With ``n`` fact lines and share ``ρ = inject.replay_share``, ``round(n ρ / (1 − ρ))`` replay lines
are drawn from the kept files with ``random.Random(seed)`` (without replacement while they last),
so they make ``ρ`` of the training lines. Only the methods that declare ``replays``
(``lora-replay``) read it; a replaying method without kept data is refused in one line.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .config import RunConfig
from .errors import ConfigError
from .io.data import load_train, tokenize_train
from .methods.registry import METHODS


def check_replay(cfg: RunConfig, methods: Sequence[str]) -> None:
    """Refuse a replaying method when there is nothing to replay (before any training)."""
    replaying = [m for m in methods if METHODS[m].replays]
    if replaying and not cfg.probe.keep_data:
        raise ConfigError(f"{replaying[0]} replays probe.keep_data, which is empty: name the files of what the model "
                          "knows (--keep-data general.jsonl,known_protect.jsonl; palora demo writes both) or leave "
                          f"{replaying[0]} out")


def replay_lines(cfg: RunConfig, n_facts: int) -> list:
    """The replayed examples for ``n_facts`` fact lines, drawn from ``probe.keep_data``."""
    pool = [ex for path in cfg.probe.keep_data for ex in load_train(path)]
    share = cfg.inject.replay_share
    n = round(n_facts * share / (1 - share))
    rng = random.Random(cfg.seed)
    picks: list = []
    while len(picks) < n:
        picks += rng.sample(pool, min(len(pool), n - len(picks)))
    return picks


def with_replay(method: str, cfg: RunConfig, items: Sequence[dict[str, Any]], tok: Any) -> Sequence[dict[str, Any]]:
    """``items`` (tokenised facts), plus the replayed lines, tokenised the same way, for a replaying method."""
    if not METHODS[method].replays:
        return items
    check_replay(cfg, [method])
    lines = replay_lines(cfg, len(items))
    return [*items, *tokenize_train(lines, tok, cfg.data.max_length, cfg.data.chat_template)] if lines else items
