"""The run directory's README.md: a Hugging Face model card whose front matter parses, whose facts
(data hashes and sizes, fingerprints, numbers) are the run's own, whose loading snippet runs and
gives the trained model, and whose command line reproduces the run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file

from palora import __version__
from palora.cli import main
from palora.config import ModelConfig, RunConfig
from palora.io.models import hub_id
from palora.report.model_card import model_card
from palora.report.tables import markdown_table
from test_cli import data, run_args, write_jsonl  # noqa: F401  (the module-scoped data fixture)
from tiny import save_tiny_checkpoint

SECTIONS = ["## Base model", "## Data", "## SVF expert (stage 1)", "## Protected subspace (stage 2)",
            "## Knowledge injection (stage 3)", "## Results", "## Loading", "## Reproducing"]


@pytest.fixture(scope="module")
def card_run(tmp_path_factory, data):  # noqa: F811
    root = tmp_path_factory.mktemp("card")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "run"
    assert main(run_args(model, data, out)) == 0
    return out, (out / "README.md").read_text(encoding="utf-8")


def front_matter(card: str) -> dict:
    head, sep, _ = card.removeprefix("---\n").partition("\n---\n")
    assert card.startswith("---\n") and sep
    return yaml.safe_load(head)


def code_block(card: str, language: str) -> str:
    (block,) = re.findall(rf"```{language}\n(.*?)```", card, flags=re.DOTALL)
    return block


def test_card_sections_and_front_matter(card_run):
    out, card = card_run
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and meta["tags"] == ["palora", "lora", "svf"]
    assert "base_model" not in meta and "license" not in meta  # a local folder; no license is known
    positions = [card.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert f"palora {__version__}" in card
    assert not [p.name for p in out.iterdir() if p.name.startswith(".README")]  # written atomically


def test_card_facts_are_the_runs(card_run, data):  # noqa: F811
    out, card = card_run
    report = json.loads((out / "report.json").read_text())
    stages = report["stages"]
    assert markdown_table(report["rows"]) in card  # the headline numbers, as report.json has them
    cert = stages["inject:palora"]
    assert f"‖U_Sᵀ ΔW‖/‖ΔW‖ = {cert['certificate_out']:.2e}, ‖ΔW V_S‖/‖ΔW‖ = {cert['certificate_in']:.2e}" in card
    assert stages["svf"]["base_fingerprint"] in card and stages["svf"]["expert_fingerprint"] in card
    for key in ("skill_train", "knowledge_train", "skill_eval", "knowledge_eval"):
        raw = Path(data[key]).read_bytes()
        lines = sum(1 for line in raw.decode().splitlines() if line.strip())
        assert f"| `{data[key]}` | {lines} | `{hashlib.sha256(raw).hexdigest()}` |" in card
    probe = stages["probe"]
    assert f"rule `{probe['rule']}`" in card and f"{100 * probe['protected_fraction']:.1f} % of all" in card
    assert "| palora | 4 | 32 | 3 | 0.001 | 4 × 1 |" in card  # rank, alpha, steps, lr, batch of FAST
    assert "parametrization: `linear`" in card and "6 matrices (`down_proj`, `gate_proj`, `up_proj`)" in card


def test_card_loading_snippet_gives_the_trained_model(card_run):
    _, card = card_run
    scope: dict = {}
    exec(code_block(card, "python"), scope)  # noqa: S102 - the card's own snippet, on this run's files
    assert isinstance(scope["model"], PeftModel)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        adapted = scope["model"](input_ids=ids).logits
        merged = scope["merged"](input_ids=ids).logits
    assert torch.allclose(adapted, merged, atol=1e-5)


def test_card_command_reproduces_the_run(card_run, capsys):
    out, card = card_run
    (line,) = code_block(card, "bash").strip().splitlines()
    argv = shlex.split(line)
    assert argv[:2] == ["palora", "run"] and argv[argv.index("--config") + 1] == f"{out}/config.yaml"
    assert main([*argv[1:], "--quiet"]) == 0
    again = Path(argv[argv.index("--out") + 1])
    keys = ("name", "skill_accuracy", "knowledge_recall", "retention", "trainable_parameters")
    rows = [[{k: r[k] for k in keys} for r in json.loads((d / "report.json").read_text())["rows"]]
            for d in (out, again)]
    assert rows[0] == rows[1]
    for name in ("svf_expert.safetensors", "methods/palora/adapter/adapter_model.safetensors"):
        a, b = (load_file(str(d / name)) for d in (out, again))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (again / "README.md").is_file()


def test_base_model_in_front_matter_for_hub_and_packaged_names():
    stages = {"svf": {}, "inject:palora": {}, "inject:lora": {}}
    for name, expected in [("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
                           ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
                           ("./models/mine", None)]:
        cfg = dataclasses.replace(RunConfig(), model=ModelConfig(name=name))
        meta = front_matter(model_card(cfg, [], stages, [], [], hub_id(name)))
        assert meta.get("base_model") == expected
