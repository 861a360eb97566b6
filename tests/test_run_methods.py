"""`palora run --methods` with the methods beyond palora and lora that give an adapter for the
expert: each is a plain peft adapter, the projected ones certify, and the compare-only methods
are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from invariants import logits, rel_err
from palora.cli import main
from palora.methods.registry import COMPARE_ONLY as COMPARE_ONLY_METHODS
from test_cli import FAST, data  # noqa: F401  (the module-scoped data fixture)
from tiny import save_tiny_checkpoint

METHODS = ("lora", "palora-in", "protect-top", "protect-random", "act-protect", "olora-penalty", "mica", "lora-intruders",
           "lora-replay", "act-protect-replay")


def run_argv(model: Path, data: dict[str, str], out: Path, methods: str) -> list[str]:  # noqa: F811
    return ["run", "--model", str(model), "--skill-train", data["skill_train"], "--skill-eval", data["skill_eval"],
            "--knowledge-train", data["knowledge_train"], "--knowledge-eval", data["knowledge_eval"],
            "--out", str(out), "--methods", methods, "--seed", "0", *FAST, "--set", "probe.fraction=0.5",
            "--keep-data", data["skill_train"]]  # what lora-replay replays


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("methods")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "run"
    assert main(run_argv(model, data, out, ",".join(METHODS))) == 0
    return out


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_a_plain_adapter_for_the_expert(run, method):
    merged = AutoModelForCausalLM.from_pretrained(run / f"methods/{method}/merged_model")
    expert = AutoModelForCausalLM.from_pretrained(run / "expert_model")
    with_adapter = PeftModel.from_pretrained(expert, str(run / f"methods/{method}/adapter"))
    assert rel_err(logits(with_adapter), logits(merged)) < 1e-5
    assert rel_err(logits(merged), logits(AutoModelForCausalLM.from_pretrained(run / "expert_model"))) > 1e-6


def test_projected_methods_certify_the_sides_they_protect(run):
    stages = json.loads((run / "stages.json").read_text())
    assert stages["inject:palora-in"]["certificate_in"] < 1e-5
    assert stages["inject:palora-in"]["certificate_out"] > 1e-3  # the out side is free
    for m in ("protect-top", "protect-random"):
        assert max(stages[f"inject:{m}"]["certificate_in"], stages[f"inject:{m}"]["certificate_out"]) < 1e-5
    assert stages["inject:act-protect"]["certificate_in"] < 1e-5
    assert "certificate_in" not in stages["inject:olora-penalty"]  # a penalty certifies nothing
    assert stages["inject:protect-top"]["upstream"].keys() == {"svf", "probe"}
    assert stages["inject:act-protect"]["upstream"].keys() == {"svf", "probe:activation"}  # its own probe


def test_protect_top_and_random_differ_but_protect_as_many(run):
    top = load_file(str(run / "methods/protect-top/adapter/adapter_model.safetensors"))
    rnd = load_file(str(run / "methods/protect-random/adapter/adapter_model.safetensors"))
    assert top.keys() == rnd.keys()
    assert any(not torch.equal(top[k], rnd[k]) for k in top)
    rows = {r["name"]: r for r in json.loads((run / "report.json").read_text())["rows"]}
    assert set(METHODS) <= set(rows)


@pytest.mark.parametrize("method", COMPARE_ONLY_METHODS)
def test_compare_only_methods_are_refused_in_one_line(data, tmp_path, capsys, method):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    assert main(run_argv(model, data, tmp_path / "run", f"lora,{method}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"palora compare --methods {method}" in err[0]
