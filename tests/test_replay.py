"""lora-replay: the share of replayed lines, drawn from the kept files only, seeded; nothing to
replay is one line before training; its digest alone reads the replay settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invariants import stage_digest as digest
from palora.config import resolve
from palora.errors import ConfigError
from palora.io.data import load_train
from palora.replay import check_replay, replay_lines, with_replay
from tiny_tokenizer import make_tiny_tokenizer


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture()
def keep(tmp_path) -> list[str]:
    return [write_jsonl(tmp_path / "general.jsonl", [{"text": f"The history of town {i}."} for i in range(5)]),
            write_jsonl(tmp_path / "known.jsonl", [{"prompt": f"The capital of land {i} is", "completion": " Quell"}
                                                   for i in range(3)])]


@pytest.mark.parametrize("share, n_facts, expected", [(0.25, 30, 10), (0.5, 4, 4), (0.2, 100, 25), (0.25, 1, 0)])
def test_replayed_lines_make_their_share_and_come_from_the_kept_files(keep, share, n_facts, expected):
    cfg = resolve(None, [f"probe.keep_data=[{keep[0]},{keep[1]}]", f"inject.replay_share={share}"])
    lines = replay_lines(cfg, n_facts)
    assert len(lines) == expected == round(n_facts * share / (1 - share))
    pool = [(ex.prompt, ex.completion) for path in keep for ex in load_train(path)]
    assert all((ex.prompt, ex.completion) in pool for ex in lines)
    if expected <= len(pool):  # without replacement while the pool lasts
        assert len({(ex.prompt, ex.completion) for ex in lines}) == expected
    assert [ex.completion for ex in replay_lines(cfg, n_facts)] == [ex.completion for ex in lines]


def test_only_a_replaying_method_gets_more_lines(keep):
    tok = make_tiny_tokenizer()
    cfg = resolve(None, [f"probe.keep_data=[{keep[0]}]", "inject.replay_share=0.5"])
    items = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}] * 6
    assert with_replay("lora", cfg, items, tok) is items
    replayed = with_replay("lora-replay", cfg, items, tok)
    assert len(replayed) == 12 and replayed[:6] == items
    assert all(set(r) >= {"input_ids", "labels"} for r in replayed[6:])


def test_nothing_to_replay_is_one_line(keep):
    with pytest.raises(ConfigError, match="lora-replay replays probe.keep_data, which is empty"):
        check_replay(resolve(None, []), ["lora", "lora-replay"])
    check_replay(resolve(None, []), ["lora", "act-protect"])
    check_replay(resolve(None, [f"probe.keep_data=[{keep[0]}]"]), ["lora-replay"])
    with pytest.raises(ConfigError, match="replay_share"):
        resolve(None, ["inject.replay_share=1"])


def test_only_the_replaying_method_reads_the_replay_settings(keep):
    base = resolve(None, [])
    other = resolve(None, [f"probe.keep_data=[{keep[0]}]", "inject.replay_share=0.4"])
    assert digest(other, "inject:lora") == digest(base, "inject:lora")
    assert digest(other, "inject:lora-replay") != digest(base, "inject:lora-replay")
    more = resolve(None, [f"probe.keep_data=[{keep[0]}]", "inject.replay_share=0.3"])
    assert digest(more, "inject:lora-replay") != digest(other, "inject:lora-replay")
