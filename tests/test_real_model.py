"""End to end on the real SmolLM2-135M-Instruct (packaged GGUF, converted once per machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from palora.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.real_model


@pytest.fixture(autouse=True)
def every_core():
    """The real model's matrices (576 x 1536) run faster on every core than on the one thread that
    conftest.py gives the tiny models; the thread count is put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


def test_palora_run_on_smollm2_writes_the_whole_run_directory(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_data.py"), str(data)], check=True)
    out = tmp_path / "run"
    code = main([
        "run", "--model", "smollm2-135m-instruct",
        "--skill-train", str(data / "skill_train.jsonl"), "--skill-eval", str(data / "skill_eval.jsonl"),
        "--knowledge-train", str(data / "knowledge_train.jsonl"),
        "--knowledge-eval", str(data / "knowledge_eval.jsonl"),
        "--out", str(out), "--methods", "palora,lora", "--quiet",
        "--set", "svf.train.steps=2", "--set", "inject.train.steps=2", "--set", "svf.train.batch_size=4",
        "--set", "inject.train.batch_size=4", "--set", "eval.limit=6", "--set", "eval.max_new_tokens=6",
    ])
    assert code == 0
    for rel in ["config.yaml", "svf_expert.safetensors", "subspace.safetensors", "expert_model/model.safetensors",
                "report.json", "report.md", "metrics.jsonl", "plots/retention_vs_recall.png",
                "plots/svf_scales.png", "plots/protected_spectrum.png"]:
        assert (out / rel).is_file(), rel
    for method in ("palora", "lora"):
        assert (out / "methods" / method / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / "methods" / method / "merged_model" / "model.safetensors").is_file()
    with safe_open(str(out / "svf_expert.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    # SmolLM2: 30 layers x (gate, up, down)
    assert len([k for k in keys if k.endswith(".z")]) == 90
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["base", "expert", "palora", "lora"]
    stages = report["stages"]
    assert stages["inject:palora"]["certificate_out"] < 1e-4
    assert stages["inject:palora"]["certificate_in"] < 1e-4


def test_palora_demo_with_a_tiny_budget_writes_every_artifact_plot_and_row(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main([
        "demo", "--out", str(out), "--quiet",
        "--set", "data_gen.n_skill_train=64", "--set", "data_gen.n_skill_val=8", "--set", "data_gen.n_skill_test=16",
        "--set", "data_gen.n_people=6", "--set", "svf.train.steps=2", "--set", "inject.train.steps=2",
        "--set", "svf.train.batch_size=4", "--set", "inject.train.batch_size=4", "--set", "probe.stat_batches=2",
        "--set", "eval.limit=8", "--set", "eval.max_new_tokens=6", "--set", "data_gen.general_per_opening=1",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("base", "expert", "act-protect-replay"):  # the comparison's names
        assert f"| {name} |" in printed
    assert "old-fact recall" in printed and "old knowledge % of the expert's" in printed
    assert "Wall time per stage" in printed
    for rel in ["data/manifest.json", "data/skill_test.jsonl", "data/knowledge_test.jsonl", "data/known_facts.jsonl",
                "config.yaml", "svf_expert.safetensors", "subspace-activation.safetensors", "report.json", "report.md",
                "plots/retention_vs_recall.png", "plots/svf_scales.png", "plots/protected_energy.png"]:
        assert (out / rel).is_file(), rel
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    kept = manifest["known_facts"]["kept"]
    assert 0 < kept < manifest["known_facts"]["candidates"] and manifest["known_facts"]["filtered_by_model"]
    known = manifest["known_facts"]
    assert len((out / "data" / "known_facts.jsonl").read_text().splitlines()) == known["held_out"]
    assert len((out / "data" / "known_protect.jsonl").read_text().splitlines()) == known["protect"]
    assert len((out / "data" / "known_val.jsonl").read_text().splitlines()) == known["val"] > 0
    assert known["held_out"] + known["val"] + known["protect"] == kept and known["held_out"] >= 150  # it knows enough
    assert manifest["general"]["lines"] == len((out / "data" / "general.jsonl").read_text().splitlines()) > 0
    # act-protect kept off the skill's, the general text's and the protect split's directions, in one budget
    experts = json.loads((out / "probe_stats-activation.json").read_text())["experts"]
    assert [Path(e["data"]).name for e in experts] == ["skill_train.jsonl", "general.jsonl", "known_protect.jsonl"]
    assert [e["fraction"] for e in experts] == pytest.approx([0.25, 0.125, 0.125], abs=0.01)
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"base", "expert", "act-protect-replay"}
    assert report["stages"]["inject:act-protect-replay"]["certificate_in"] < 1e-4  # kept off the protected inputs
    for r in rows.values():
        for key in ("skill_accuracy", "knowledge_recall", "known_recall", "known_of_expert", "trainable_parameters"):
            assert r[key] is not None
    # the evaluation read the test splits, never the validation ones
    assert report["config"]["data"]["skill_eval"].endswith("skill_test.jsonl")
    assert report["config"]["data"]["knowledge_eval"].endswith("knowledge_test.jsonl")
