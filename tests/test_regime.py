"""experiments/regime.py --shots: every skill prompt gains the same solved training items, no
evaluation question is among them, and every other file keeps its bytes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from palora.config import DataSpec
from palora.stages.data import write_demo_data

_SPEC = importlib.util.spec_from_file_location("regime", Path(__file__).parents[1] / "experiments" / "regime.py")
regime = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(regime)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    write_demo_data(out, DataSpec(skill_task="chain_sum_2", n_skill_train=40, n_skill_val=10, n_skill_test=10,
                                  n_people=4), progress=False)
    return out


def test_shots_lead_every_skill_prompt_and_nothing_else_changes(data, tmp_path):
    out = tmp_path / "shots"
    regime.write_shots(data, 3, out)
    train = rows(data / "skill_train.jsonl")
    lead = "".join(f"{r['prompt']}{r['completion']}\n\n" for r in train[:3])
    assert lead.count("Answer:") == 3
    for split in ("train", "val", "test"):
        before, after = rows(data / f"skill_{split}.jsonl"), rows(out / f"skill_{split}.jsonl")
        assert [a["prompt"] for a in after] == [lead + b["prompt"] for b in before]
        assert [{k: v for k, v in a.items() if k != "prompt"} for a in after] == \
               [{k: v for k, v in b.items() if k != "prompt"} for b in before]
    # the exemplars are training questions: no evaluation question is one of them
    shot_questions = {r["prompt"] for r in train[:3]}
    for split in ("val", "test"):
        assert not shot_questions & {r["prompt"] for r in rows(data / f"skill_{split}.jsonl")}
    for name in ("knowledge_train", "knowledge_val", "knowledge_test", "known_facts", "config"):
        suffix = ".yaml" if name == "config" else ".jsonl"
        src = data / f"{name}{suffix}"
        if src.exists():
            assert (out / src.name).read_bytes() == src.read_bytes()
    assert not (out / "manifest.json").exists()
    assert json.loads((out / "shots.json").read_text())["shots"] == 3


def test_shots_refuse_an_existing_folder_and_leave_it_alone(data, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="exists"):
        regime.write_shots(data, 3, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
