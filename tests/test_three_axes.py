"""experiments/three_axes.py: the three axes of issue 19 per seed (against that seed's expert), the
early-stopped LoRA read from its sibling directory, and the goal's missed axes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

_DIR = Path(__file__).parents[1] / "experiments"
sys.path.insert(0, str(_DIR))  # three_axes imports verdict, as when run as a script
_SPEC = importlib.util.spec_from_file_location("three_axes", _DIR / "three_axes.py")
three_axes = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(three_axes)


def row(name, skill, recall, known):
    return {"name": name, "skill_accuracy": skill, "skill_stderr": 0.02, "knowledge_recall": recall,
            "knowledge_stderr": 0.03, "known_recall": known, "known_stderr": 0.03}


def report(d: Path, rows: list[dict]) -> Path:
    d.mkdir()
    (d / "report.json").write_text(json.dumps({"rows": rows}))
    return d


def test_axes_are_per_seed_ratios_and_early_lora_joins(tmp_path):
    a = report(tmp_path / "seed0", [row("base", 0.0, 0.0, 1.0), row("expert", 0.5, 0.0, 0.8),
                                    row("act-protect", 0.5, 0.85, 0.76), row("lora", 0.25, 0.9, 0.2)])
    b = report(tmp_path / "seed1", [row("base", 0.0, 0.0, 1.0), row("expert", 0.4, 0.0, 0.5),
                                    row("act-protect", 0.38, 0.75, 0.5), row("lora", 0.3, 0.8, 0.1)])
    report(tmp_path / "seed0-early", [row("base", 0.0, 0.0, 1.0), row("expert", 0.5, 0.0, 0.8),
                                      row("lora", 0.45, 0.3, 0.6)])
    report(tmp_path / "seed1-early", [row("base", 0.0, 0.0, 1.0), row("expert", 0.4, 0.0, 0.5),
                                      row("lora", 0.4, 0.2, 0.4)])
    t = three_axes.table([a, b])
    assert list(t) == ["expert", "act-protect", "lora", "lora (early)"]
    p = t["act-protect"]
    assert p["retention"][0] == pytest.approx((1.0 + 0.95) / 2)
    assert p["old"][0] == pytest.approx((0.95 + 1.0) / 2) and p["recall"][0] == pytest.approx(0.8)
    assert p["recall"][1] == pytest.approx(math.sqrt(2 * 0.05**2 / 1 / 2))  # std / sqrt(n) over the seeds
    assert three_axes.misses(p) == "met"
    assert three_axes.misses(t["lora"]) == "retention, old"
    assert t["lora (early)"]["old"][0] == pytest.approx((0.75 + 0.8) / 2)
