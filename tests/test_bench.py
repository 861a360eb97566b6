"""bench/run.py on a tiny model: every CPU row is there, with the JSON schema docs/benchmarks.md
describes; and the 8B-shaped rows' code (meant for a GPU) runs on tiny shapes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
CPU_ROWS = {"injection_step", "svf_step", "injection_peak_memory", "memory_model_injection", "memory_model_svf",
            "merged_generation", "eval_throughput", "decomposition_model", "decomposition", "demo_wall_time"}
LAYER_ROWS = {"injection_step", "lora_step_vs_dense", "svf_step", "svf_factored_vs_dense", "svf_recomposed_vs_dense",
              "injection_peak_memory", "memory_model_injection", "memory_model_svf"}
KEYS = {"name", "ours", "baseline", "ratio", "target", "unit", "device", "ok", "note"}


def check_row(row: dict, device: str) -> None:
    assert KEYS <= set(row), row
    assert row["device"] == device
    if row["ours"] is not None and row["baseline"]:  # a zero baseline (nothing measurable) has no ratio
        assert row["ratio"] == pytest.approx(row["ours"] / row["baseline"], rel=1e-12)
    else:
        assert row["ratio"] is None
    assert row["ok"] in (True, False, None)


def test_run_cpu_quick_on_a_tiny_model(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "tiny", "llama")
    demo = tmp_path / "demo"
    demo.mkdir()
    stages = {"data": {"wall_time_s": 1.5}, "svf": {"wall_time_s": 100.25}, "probe": {"wall_time_s": 3.0},
              "eval": {"wall_time_s": 50.0, "rows": 4}}
    (demo / "stages.json").write_text(json.dumps(stages))
    out = tmp_path / "bench.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(BENCH / "run.py"), "--device", "cpu", "--quick", "--threads", "1",
           "--model", str(model), "--demo-run", str(demo), "--out", str(out)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == CPU_ROWS and len(report["rows"]) == len(CPU_ROWS)
    for row in report["rows"]:
        check_row(row, "cpu")
        assert row["name"] in result.stdout  # the printed table
    assert rows["demo_wall_time"]["ours"] == pytest.approx(154.75) and rows["demo_wall_time"]["ok"] is True
    assert rows["eval_throughput"]["unit"] == "items/s" and rows["eval_throughput"]["batch_size"] == 4
    assert rows["merged_generation"]["stock"] is True
    for name in ("decomposition_model", "decomposition"):  # timed, the error checked; no baseline on the CPU
        assert rows[name]["ours"] > 0 and rows[name]["baseline"] is None and rows[name]["ok"] is True
        assert rows[name]["max_error"] < 1e-4 and rows[name]["target"] == "error <= 0.0001"
    assert rows["decomposition_model"]["matrices"] == 3 * 2  # the tiny model: 2 layers of gate, up, down
    for name in ("injection_step", "svf_step", "merged_generation"):
        assert rows[name]["ours"] > 0 and rows[name]["baseline"] > 0
    assert report["quick"] is True and "--device cpu" in report["command"]
    assert report["machine"]["cpus"] >= 1


@pytest.fixture
def bench_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_demo_row_is_never_made_up(bench_modules, tmp_path):
    from model_rows import demo_row

    row = demo_row(None).to_json()
    assert row["ours"] is None and row["ratio"] is None and row["ok"] is None and "not measured" in row["note"]
    (tmp_path / "stages.json").write_text(json.dumps({"svf": {"wall_time_s": 2.0}}))
    unfinished = demo_row(str(tmp_path))
    assert unfinished.ours == 2.0 and unfinished.ok is None and "NOT finished" in unfinished.note


def test_gpu_rows_code_runs_on_tiny_shapes(bench_modules):
    """The 8B-shaped rows with tiny shapes on the CPU: same code, so a GPU run fails on nothing but CUDA."""
    from decomposition import decomposition_row
    from layer_rows import LayerSettings, layer_rows

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    rows = layer_rows(LayerSettings(m=48, n=32, tokens=64, rank=4, k=8, dtype=torch.float32, reps=2, warmup=1,
                                    inner=1), cpu)
    assert {r.name for r in rows} == LAYER_ROWS
    row = decomposition_row(cpu, layers=2, hidden=32, intermediate=48, measured_matrices=3,
                             baseline_matrices=1)
    assert row.extra["max_error"] < 1e-4 and row.extra["matrices"] == 6 and row.extra["matrices_measured"] == 3
    assert row.baseline is not None and row.ok
    for r in [*rows, row]:
        check_row(r.to_json(), "cpu")


def test_padding_free_bench_on_a_tiny_model(tmp_path):
    """bench/padding_free.py: both rows, the same loss either way, fewer joined tokens than padded positions."""
    model = save_tiny_checkpoint(tmp_path / "tiny", "llama")
    data = tmp_path / "data"
    data.mkdir()
    lines = {"knowledge_train.jsonl": [{"text": f"Person {i} was born in {1900 + i}."} for i in range(24)],
             "general.jsonl": [{"text": "The history of " + "very long sentences " * (3 + i)} for i in range(6)],
             "known_protect.jsonl": [{"prompt": f"The capital of {c} is", "completion": " X"} for c in "ABCD"]}
    for name, rows in lines.items():
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pf.json"
    cmd = [sys.executable, str(BENCH / "padding_free.py"), "--data", str(data), "--model", str(model),
           "--out", str(out), "--batches", "2", "--reps", "2", "--threads", "1"]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"step_facts", "step_replay"}
    for row in rows.values():
        check_row(row, "cpu")
        assert row["max_loss_difference"] < 1e-5 and row["tokens"] < row["padded_positions"]


def test_demo_speed_bench_on_a_tiny_model(tmp_path):
    """bench/demo_speed.py: every row, the same answers and losses both ways, fewer targets than positions
    on the masked skill lines."""
    model = save_tiny_checkpoint(tmp_path / "tiny", "llama")
    data = tmp_path / "data"
    data.mkdir()
    lines = {"skill_train.jsonl": [{"prompt": f"Question: {i} + {i}?\nAnswer:", "completion": f" {2 * i}"} for i in range(20)],
             "knowledge_train.jsonl": [{"text": f"Person {i} was born in {1900 + i}."} for i in range(24)],
             "known_facts.jsonl": [{"prompt": f"The capital of {c} is", "answer": "X"} for c in "ABCDEF"],
             "general.jsonl": [{"text": "The history of " + "very long sentences " * (3 + i)} for i in range(6)],
             "known_protect.jsonl": [{"prompt": f"The capital of {c} is", "completion": " X"} for c in "ABCD"]}
    for name, rows in lines.items():
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "speed.json"
    cmd = [sys.executable, str(BENCH / "demo_speed.py"), "--data", str(data), "--model", str(model), "--out", str(out),
           "--prompts", "6", "--stat-batches", "2", "--batches", "2", "--reps", "2", "--threads", "1"]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"generate_batch", "covariance_eigh", "svf_step_kept_logits", "inject_step_kept_logits"}
    for row in rows.values():
        check_row(row, "cpu")
    assert rows["generate_batch"]["answers_differ"] == 0 and rows["generate_batch"]["prompts"] == 6
    assert rows["covariance_eigh"]["max_orthonormality_error"] < 1e-4
    assert rows["covariance_eigh"]["max_energy_share_difference"] < 1e-4
    for name in ("svf_step_kept_logits", "inject_step_kept_logits"):
        assert rows[name]["max_loss_difference"] < 1e-5
    assert rows["svf_step_kept_logits"]["targets"] < rows["svf_step_kept_logits"]["positions"]
