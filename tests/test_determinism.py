"""The same seed twice on CPU gives the same report.json metrics, and bitwise the same artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from palora.cli import main
from test_cli import data, run_args  # noqa: F401  (the module-scoped data fixture)
from tiny import save_tiny_checkpoint

METRICS = ("name", "seed", "skill_accuracy", "knowledge_recall", "retention", "trainable_parameters",
           "n_skill", "n_knowledge")


def _report(out: Path) -> list[dict]:
    return [{k: r[k] for k in METRICS} for r in json.loads((out / "report.json").read_text())["rows"]]


def _safetensors(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    # the header's metadata order is not fixed by safetensors, so the bytes may differ; the content not
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_same_seed_same_report(data, tmp_path):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    a, b = tmp_path / "a", tmp_path / "b"
    extra = ["--set", "svf.train.steps=8", "--set", "inject.train.steps=8"]
    assert main(run_args(model, data, a) + extra) == 0
    assert main(run_args(model, data, b) + extra) == 0
    assert _report(a) == _report(b)
    for name in ("svf_expert.safetensors", "subspace.safetensors", "methods/lora/adapter/adapter_model.safetensors",
                 "methods/palora/adapter/adapter_model.safetensors"):
        (meta_a, ta), (meta_b, tb) = _safetensors(a / name), _safetensors(b / name)
        assert meta_a == meta_b and ta.keys() == tb.keys(), name
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    outputs = sorted(p.name for p in (a / "evaluations").iterdir())
    assert outputs and all((a / "evaluations" / n).read_bytes() == (b / "evaluations" / n).read_bytes()
                           for n in outputs)
