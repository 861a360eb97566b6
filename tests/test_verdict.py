"""experiments/verdict.py: retention and gain retention per seed, their mean and standard error over
seeds, and the rule that names the failing axis of the paper's claim."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("verdict", Path(__file__).parents[1] / "experiments" / "verdict.py")
verdict = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(verdict)


def row(name, skill, recall, known, n_skill=500, n_knowledge=200, n_known=50):
    return {"name": name, "skill_accuracy": skill, "skill_stderr": math.sqrt(skill * (1 - skill) / n_skill),
            "knowledge_recall": recall, "knowledge_stderr": math.sqrt(recall * (1 - recall) / n_knowledge),
            "known_recall": known, "known_stderr": math.sqrt(known * (1 - known) / n_known),
            "n_skill": n_skill, "n_knowledge": n_knowledge}


def run(tmp_path, name, rows):
    d = tmp_path / name
    d.mkdir()
    (d / "report.json").write_text(json.dumps({"rows": rows}))
    return d


def test_gain_retention_is_zero_at_the_base_and_one_at_the_expert(tmp_path):
    a = run(tmp_path, "s0", [row("base", 0.3, 0.0, 0.8), row("expert", 0.5, 0.0, 0.8),
                             row("lora", 0.4, 0.4, 0.4), row("x", 0.49, 0.36, 0.6)])
    t = verdict.setting_table([a])
    assert t["base"]["gain"][0] == 0 and t["expert"]["gain"][0] == pytest.approx(1)
    assert t["lora"]["gain"][0] == pytest.approx(0.5) and t["lora"]["retention"][0] == pytest.approx(0.8)
    # one seed: the binomial standard error of the test number, scaled like the number
    assert t["x"]["retention"][1] == pytest.approx(math.sqrt(0.49 * 0.51 / 500) / 0.5)
    assert t["x"]["gain"][1] == pytest.approx(math.sqrt(0.49 * 0.51 / 500) / 0.2)
    assert t["x"]["recall_gap"][0] == pytest.approx(-0.04)
    assert t["x"]["capitals"][0] == pytest.approx(0.75)
    assert verdict.verdict(t["x"]) == "holds"  # 98 % retention, 90 % of LoRA's recall


def test_over_seeds_the_error_is_that_of_the_mean_and_the_rule_names_the_failing_axis(tmp_path):
    runs = [run(tmp_path, f"s{i}", [row("base", 0.0, 0.0, 0.9), row("expert", 0.5, 0.0, 0.9),
                                    row("lora", 0.3, 0.4, 0.3), row("low", 0.5, r, 0.3),
                                    row("weak", 0.4 + 0.02 * i, 0.4, 0.3)])
            for i, r in enumerate((0.2, 0.3))]
    t = verdict.setting_table(runs)
    assert t["weak"]["retention"] == pytest.approx((0.82, 0.02))  # (0.8, 0.84): std/√2 = 0.02
    assert verdict.verdict(t["weak"]) == "retention"
    assert t["low"]["recall_ratio"][0] == pytest.approx(0.25 / 0.4)
    assert verdict.verdict(t["low"]) == "recall"
