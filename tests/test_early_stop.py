"""experiments/early_stop.py: the stopping rules, chosen on validation alone: ``matched`` (the
step nearest the reference's recall) and ``tolerant`` (the last step that keeps 95 % of the
expert's skill), and the three axes against the expert."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

_DIR = Path(__file__).parents[1] / "experiments"
sys.path.insert(0, str(_DIR))  # early_stop imports three_axes, validate and verdict, as when run as a script
_SPEC = importlib.util.spec_from_file_location("early_stop", _DIR / "early_stop.py")
early_stop = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(early_stop)


def point(step, skill, recall, known=0.5):
    return {"step": step, "skill_accuracy": skill, "skill_stderr": 0.02, "knowledge_recall": recall,
            "knowledge_stderr": 0.03, "known_recall": known, "known_stderr": 0.04}


CURVE = [point(25, 0.50, 0.10), point(50, 0.48, 0.40), point(75, 0.45, 0.70), point(100, 0.30, 0.90)]


def test_matched_is_the_step_nearest_the_reference_recall():
    assert early_stop.pick_matched(CURVE, 0.86) == 100
    assert early_stop.pick_matched(CURVE, 0.60) == 75
    tie = [point(25, 0.5, 0.25), point(50, 0.5, 0.75)]
    assert early_stop.pick_matched(tie, 0.5) == 25  # equally near: the earlier step


def test_tolerant_is_the_last_step_keeping_95_percent_of_the_skill():
    assert early_stop.pick_tolerant(CURVE, expert_skill=0.50) == 50  # 0.48 ≥ 0.475, 0.45 < 0.475
    assert early_stop.pick_tolerant(CURVE, expert_skill=0.47) == 75
    assert early_stop.pick_tolerant(CURVE, expert_skill=0.90) == 25  # none keeps it: the first step


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=12), st.floats(0, 1),
       st.floats(0.01, 1))
def test_rules_pick_a_measured_step(values, target, expert):
    curve = [point(25 * (i + 1), s, r) for i, (s, r) in enumerate(values)]
    steps = {p["step"] for p in curve}
    matched = early_stop.pick_matched(curve, target)
    assert matched in steps
    best = min(abs(p["knowledge_recall"] - target) for p in curve)
    assert abs(next(p for p in curve if p["step"] == matched)["knowledge_recall"] - target) == best
    tolerant = early_stop.pick_tolerant(curve, expert)
    assert tolerant in steps
    later = [p for p in curve if p["step"] > tolerant]
    assert all(p["skill_accuracy"] < 0.95 * expert for p in later)


def test_axes_are_against_the_expert():
    a = early_stop.axes(point(50, 0.40, 0.70, known=0.30), point(0, 0.50, 0.0, known=0.60))
    assert a["retention"] == pytest.approx((0.8, 0.04))
    assert a["recall"] == pytest.approx((0.70, 0.03))
    assert a["old"] == pytest.approx((0.5, 0.04 / 0.6))
