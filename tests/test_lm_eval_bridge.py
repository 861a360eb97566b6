"""`palora eval --lm-eval`: lm-evaluation-harness tasks on the base, the expert and every method,
through the shipped offline task of examples/lm_eval_task/ (two-digit additions, generated and
multiple choice), on a tiny run made stage by stage."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from palora.cli import main
from test_cli import FAST, METHODS, assert_one_line_error, write_jsonl
from tiny import save_tiny_checkpoint

TASK_DIR = Path(__file__).resolve().parents[1] / "examples" / "lm_eval_task"
TASKS = ("palora_addition", "palora_addition_mc")
LM_EVAL = ["--lm-eval", ",".join(TASKS), "--set", f"eval.lm_eval_include_path={TASK_DIR}",
           "--set", "eval.lm_eval_limit=4"]


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A run with its expert, subspace and both methods, not yet evaluated; the eval flags; the data flags."""
    root = tmp_path_factory.mktemp("lm_eval")
    sums = [(a, b) for a in range(1, 5) for b in range(2, 5)]
    skill_train = write_jsonl(root / "skill_train.jsonl", [
        {"prompt": f"Question: what is {a} + {b}? Answer:", "completion": f" {a + b}"} for a, b in sums])
    skill_eval = write_jsonl(root / "skill_eval.jsonl", [
        {"prompt": f"Question: what is {a} + {b}? Answer:", "answer": a + b} for a, b in sums[:4]])
    facts_train = write_jsonl(root / "facts_train.jsonl", [
        {"text": "The capital of Zorbia is Quell."}, {"text": "Alice Marsh was born in 1901."}])
    facts_eval = write_jsonl(root / "facts_eval.jsonl", [{"prompt": "The capital of Zorbia is", "answer": "Quell"}])
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "run"
    common = ["--out", str(out), *FAST]
    assert main(["svf", "--model", str(model), "--skill-train", skill_train, "--seed", "0", *common]) == 0
    assert main(["probe", *common]) == 0
    assert main(["inject", "--knowledge-train", facts_train, "--methods", ",".join(METHODS), *common]) == 0
    data = ["--skill-train", skill_train, "--skill-eval", skill_eval, "--knowledge-train", facts_train,
            "--knowledge-eval", facts_eval, "--model", str(model)]
    return out, ["eval", "--skill-eval", skill_eval, "--knowledge-eval", facts_eval, *FAST], data


def copy_run(staged: tuple[Path, list[str], list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    out, argv, _ = staged
    run = tmp_path / "run"
    shutil.copytree(out, run)
    return run, [*argv, "--out", str(run)]


def test_eval_scores_every_model_on_the_lm_eval_tasks(staged, tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    run, argv = copy_run(staged, tmp_path)
    assert main([*argv, *LM_EVAL]) == 0
    report = json.loads((run / "report.json").read_text())

    names = ["base", "expert", *METHODS]
    assert [r["name"] for r in report["rows"]] == names  # the rows contract is unchanged
    for r in report["rows"]:
        assert {"seed", "skill_accuracy", "knowledge_recall", "retention"} <= set(r)
        assert r["lm_eval_time_s"] >= 0
    scores = report["lm_eval"]
    assert list(scores) == names
    for tasks in scores.values():
        assert set(tasks) == set(TASKS)
        assert 0.0 <= tasks["palora_addition"]["exact_match,first-number"] <= 1.0
        mc = tasks["palora_addition_mc"]
        assert {"acc,none", "acc_norm,none", "acc_stderr,none"} <= set(mc)
        assert mc["acc,none"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # lm_eval_limit=4 items
    assert report["stages"]["eval"]["lm_eval_version"] == lm_eval.__version__
    assert report["config"]["eval"]["lm_eval_tasks"] == list(TASKS)
    md = (run / "report.md").read_text()
    assert "lm-evaluation-harness" in md and "palora_addition_mc acc,none" in md
    assert all(f"| {name} |" in md for name in names)

    # the same command again: the evaluation is done, its report (lm-eval scores included) kept
    assert main([*argv, *LM_EVAL]) == 0
    assert json.loads((run / "report.json").read_text())["lm_eval"] == scores


def test_lm_eval_settings_are_part_of_the_eval_stage(staged, tmp_path, capsys):
    """Asking for other tasks on an evaluated run is another evaluation: refused without --overwrite."""
    pytest.importorskip("lm_eval")
    run, argv = copy_run(staged, tmp_path)
    assert main(argv) == 0
    assert "lm_eval" not in json.loads((run / "report.json").read_text())
    assert_one_line_error(capsys, [*argv, *LM_EVAL], "eval.lm_eval_tasks", "--overwrite")
    assert main([*argv, *LM_EVAL, "--overwrite"]) == 0
    assert set(json.loads((run / "report.json").read_text())["lm_eval"]) == {"base", "expert", *METHODS}


def test_unknown_task_and_bad_include_path(staged, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    run, argv = copy_run(staged, tmp_path)
    bad_path = ["--lm-eval", "palora_addition", "--set", f"eval.lm_eval_include_path={tmp_path / 'nowhere'}"]
    assert_one_line_error(capsys, [*argv, *bad_path], "eval.lm_eval_include_path", "nowhere")
    misspelt = ["--lm-eval", "palora_additon", "--set", f"eval.lm_eval_include_path={TASK_DIR}"]
    assert_one_line_error(capsys, [*argv, *misspelt], "palora_additon", "did you mean palora_addition?")
    assert not (run / "report.json").exists()


def test_run_refuses_a_bad_task_before_training(staged, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    *_, data = staged
    out = tmp_path / "run"
    argv = ["run", *data, "--out", str(out), *FAST, "--lm-eval", "palora_addition",
            "--set", f"eval.lm_eval_include_path={tmp_path / 'nowhere'}"]
    assert_one_line_error(capsys, argv, "eval.lm_eval_include_path")
    assert not (out / "svf_expert.safetensors").exists()


def test_without_lm_eval_installed(staged, tmp_path, capsys, monkeypatch):
    run, argv = copy_run(staged, tmp_path)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets where it is not installed
    assert_one_line_error(capsys, [*argv, *LM_EVAL], "pip install 'lm_eval<0.5,>=0.4.13'", "'.[eval]'")
    assert not (run / "report.json").exists()
