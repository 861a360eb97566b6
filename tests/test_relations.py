"""experiments/relations.py: old facts answered per relation, seeds pooled, and a refusal when an
evaluation file is not of the run's held-out known facts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "experiments" / "relations.py"


def write_run(d: Path, facts: list[tuple[str, str]], answers: dict[str, list[bool]]) -> Path:
    (d / "data").mkdir(parents=True)
    (d / "evaluations").mkdir()
    (d / "data" / "known_facts.jsonl").write_text("".join(
        json.dumps({"prompt": p, "answer": "x", "relation": r}) + "\n" for p, r in facts))
    for model, correct in answers.items():
        (d / "evaluations" / f"{model}.known.jsonl").write_text("".join(
            json.dumps({"prompt": p, "correct": c}) + "\n" for (p, _), c in zip(facts, correct, strict=True)))
    return d


def run(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_shares_are_pooled_over_seeds(tmp_path):
    facts = [("The capital of A is", "capital"), ("The capital of B is", "capital"), ("A speaks", "language")]
    a = write_run(tmp_path / "s0", facts, {"expert": [True, True, True], "m": [True, False, False],
                                            "base": [True, True, True]})
    b = write_run(tmp_path / "s1", facts, {"expert": [True, False, True], "m": [False, False, True]})
    out = run(a, b)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| model | capital (2) | currency (0) | language (1)")
    assert lines[2] == "| expert | 75.0 | – | 100.0 | – | – |"  # 3 of 4 capitals, 2 of 2 languages
    assert lines[3] == "| m | 25.0 | – | 50.0 | – | – |" and len(lines) == 4  # base left out


def test_answers_of_other_facts_are_refused(tmp_path):
    d = write_run(tmp_path / "s0", [("P1", "capital"), ("P2", "capital")], {"expert": [True, False]})
    (d / "evaluations" / "expert.known.jsonl").write_text(json.dumps({"prompt": "Q", "correct": True}) + "\n")
    out = run(d)
    assert out.returncode != 0 and "not those of data/known_facts.jsonl" in out.stderr
