"""Snapshots of the injection (``inject.snapshot_every``): the adapter as trained to step k, written
as a plain peft adapter of the expert. With a constant rate the snapshot of step k of a longer run
is the adapter of a run of k steps (the same batches, the same updates); a projected method's
snapshot keeps its projection; what cannot be snapshotted is refused before training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from palora.cli import main
from palora.config import load
from palora.errors import ArtifactError
from palora.io.artifacts import RunDir
from palora.stages.evaluate import load_method
from test_cli import data, run_args  # noqa: F401  (the module-scoped data fixture)
from tiny import save_tiny_checkpoint

CONSTANT = ["--set", "inject.train.schedule=constant", "--set", "inject.train.warmup_ratio=0"]


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, data):  # noqa: F811
    root = tmp_path_factory.mktemp("snapshots")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "run"
    argv = run_args(model, data, out) + [*CONSTANT, "--set", "inject.train.steps=5", "--set", "inject.snapshot_every=2"]
    assert main(argv) == 0
    return out


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_snapshot_of_step_k_is_the_adapter_of_k_steps(long_run, tmp_path):
    rd = RunDir(long_run)
    for method in ("palora", "lora"):
        assert rd.snapshot_steps(method) == [2, 4]  # every 2 steps before the last (step 5 is the adapter)
    short = tmp_path / "short"
    shutil.copytree(long_run, short)
    assert main(["inject", "--out", str(short), "--overwrite", "--quiet", *CONSTANT,
                 "--set", "inject.train.steps=4", "--set", "inject.snapshot_every=2"]) == 0
    for method in ("palora", "lora"):
        snap, own = adapter_tensors(rd.snapshot(method, 4)), adapter_tensors(RunDir(short).adapter(method))
        assert snap.keys() == own.keys()
        for k in snap:
            torch.testing.assert_close(snap[k], own[k], rtol=0, atol=0)
        # the longer run's adapter moved on after its snapshot
        last = adapter_tensors(rd.adapter(method))
        assert any(not torch.equal(snap[k], last[k]) for k in snap)


def test_snapshot_loads_as_the_method_at_that_step(long_run, tmp_path):
    cfg, rd = load(long_run / "config.yaml"), RunDir(long_run)
    at_2 = load_method(cfg, rd, "palora", 2)
    at_4 = load_method(cfg, rd, "palora", 4)
    final = load_method(cfg, rd, "palora")
    changed = [n for n, p in at_4.named_parameters() if not torch.equal(p, dict(at_2.named_parameters())[n])]
    assert changed and all(n in dict(final.named_parameters()) for n in changed)
    with pytest.raises(ArtifactError, match=r"snapshots of palora are at steps \[2, 4\]"):
        load_method(cfg, rd, "palora", 3)


@pytest.mark.parametrize(("settings", "message"), [
    (["--set", "inject.snapshot_every=3"], "must be in"),  # not before the last step (3 steps in FAST)
    (["--set", "inject.snapshot_every=1", "--methods", "lora,lora-intruders"], "lora-intruders"),
    (["--set", "inject.snapshot_every=1", "--set", "inject.train.sharding=fsdp2"], "fsdp2"),
])
def test_what_cannot_be_snapshotted_is_refused_before_training(tmp_path, data, capsys, settings, message):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    assert main(run_args(model, data, out) + settings) == 2
    err = capsys.readouterr().err
    assert "inject.snapshot_every" in err and message in err and len(err.strip().splitlines()) == 1
    assert not (out / "svf_expert.safetensors").exists()
