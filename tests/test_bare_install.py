"""The package alone, as a user installs it: a fresh virtual environment, torch first and pinned
(``torch==2.13.0``, as the Makefile installs it, never an open range that could pull another build),
then palora with no extras and no constraints file, its dependencies from the package index; then
``palora --help`` and ``palora run`` on a tiny model with every injection method that gives an adapter. Catches an import of a package nothing declares (it failed this way once,
on peft's CorDA importing ``attrs``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from palora.methods.registry import FOR_EXPERT
from test_cli import write_jsonl
from tiny import save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(map(str, argv))}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.bare
def test_the_bare_package_installs_and_runs(tmp_path):
    source = tmp_path / "source"  # a copy: building must not write into the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    pip = venv / "bin" / "pip"
    run(pip, "install", "-q", "torch==2.13.0", cwd=tmp_path)
    run(pip, "install", "-q", source, cwd=tmp_path)
    assert "usage: palora" in run(venv / "bin" / "palora", "--help", cwd=tmp_path)
    # what the compare-only baselines import on demand is declared too (peft's CorDA needs attrs)
    run(venv / "bin" / "python", "-c", "import peft.tuners.lora.corda, peft.tuners.lora.intruders", cwd=tmp_path)

    model = save_tiny_checkpoint(tmp_path / "m", "llama", seed=0)
    skill = [{"prompt": f"Q: {a} + {b}? A:", "completion": f" {a + b}"} for a in range(1, 5) for b in range(1, 4)]
    files = {
        "--skill-train": write_jsonl(tmp_path / "skill.jsonl", skill),
        "--skill-eval": write_jsonl(tmp_path / "skill_eval.jsonl", [{"prompt": s["prompt"], "answer":
                                                                    s["completion"].strip()} for s in skill[:3]]),
        "--knowledge-train": write_jsonl(tmp_path / "facts.jsonl", [{"text": "The capital of Zorbia is Quell."}]),
        "--knowledge-eval": write_jsonl(tmp_path / "facts_eval.jsonl", [{"prompt": "The capital of Zorbia is",
                                                                        "answer": "Quell"}]),
    }
    out = tmp_path / "run"
    small = [x for key in ("svf.train.steps=2", "inject.train.steps=2", "svf.train.batch_size=4",
                           "inject.train.batch_size=4", "inject.rank=4", "eval.limit=2", "eval.max_new_tokens=2",
                           "probe.stat_batches=1", "probe.stat_batch_size=4") for x in ("--set", key)]
    run(venv / "bin" / "palora", "run", "--model", model, *[x for kv in files.items() for x in kv], "--out", out,
        "--methods", ",".join(FOR_EXPERT), "--keep-data", files["--skill-train"], *small, "--quiet", cwd=tmp_path)
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["base", "expert", *FOR_EXPERT]
