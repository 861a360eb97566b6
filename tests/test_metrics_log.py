"""Training curves: metrics.jsonl always; TensorBoard event files (read back with TensorBoard's own
reader) that hold exactly the logged numbers, once per step even after a resume; W&B offline when
installed; a missing tracker package refused in one line; ``log.*`` never part of a stage digest."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from invariants import stage_digest as digest
from palora.cli import main
from palora.config import LogConfig, RunConfig, resolve
from palora.core.svf import add_svf
from palora.errors import ConfigError
from palora.io.data import TrainCollator
from palora.io.metrics_log import MetricsLog, scalar_prefix
from palora.training.checkpoint import CheckpointSpec
from palora.training.loop import train
from test_cli import data, run_args, write_jsonl  # noqa: F401  (the module-scoped data fixture)
from tiny import make_tiny_model, save_tiny_checkpoint, tiny_train_items

STAGES = ("svf", "inject:palora", "inject:lora")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run folder, ``{tag: [(step, value), ...]}``, as TensorBoard reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same_curves(records: list[dict], scalars: dict[str, list[tuple[int, float]]], stage: str) -> None:
    prefix = scalar_prefix(stage)
    for key in ("loss", "lr", "grad_norm"):
        expected = [(r["step"], r[key]) for r in records if r["stage"] == stage]
        got = scalars[f"{prefix}/{key}"]
        assert [s for s, _ in got] == [s for s, _ in expected]  # every step once, in order
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-9)  # float32


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory, data):  # noqa: F811
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("tb")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "run"
    assert main(run_args(model, data, out) + ["--set", "log.report_to=[tensorboard]"]) == 0
    return model, out


def test_tensorboard_holds_the_metrics_jsonl_numbers(tensorboard_run):
    _, out = tensorboard_run
    records = jsonl(out / "metrics.jsonl")
    assert {r["stage"] for r in records} == set(STAGES)
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["inject-lora", "inject-palora", "svf"]
    for stage in STAGES:  # one TensorBoard run per stage
        scalars = event_scalars(out / "tensorboard" / stage.replace(":", "-"))
        assert set(scalars) == {f"{scalar_prefix(stage)}/{k}" for k in ("loss", "lr", "grad_norm")}
        assert_same_curves(records, scalars, stage)


def test_log_settings_change_no_stage(tensorboard_run, data, capsys):  # noqa: F811
    """The same run without TensorBoard: every stage is already done, nothing is refused or redone."""
    model, out = tensorboard_run
    for key in ("svf", "probe", "inject:palora", "eval"):
        cfg = RunConfig()
        assert digest(cfg, key) == digest(dataclasses.replace(cfg, log=LogConfig(["tensorboard"], "p", "n")), key)
    stages = (out / "stages.json").read_text()
    capsys.readouterr()
    assert main(run_args(model, data, out)) == 0
    said = capsys.readouterr().out
    assert all(f"{key}: already done" in said for key in ("svf", "probe", "inject:palora", "inject:lora", "eval"))
    assert (out / "stages.json").read_text() == stages


def test_default_run_writes_metrics_jsonl_only(tmp_path):
    """Through the loop itself: records go to metrics.jsonl, and no tracker folder appears."""
    model = make_tiny_model("llama", seed=0)
    add_svf(model, "linear", None, progress=False)
    cfg = resolve(overrides=["svf.train.steps=4", "svf.train.batch_size=2", "svf.train.log_every=2"]).svf.train
    result = train(model, _items(), TrainCollator(0), cfg, seed=0, stage="svf", progress=False,
                   log=MetricsLog(tmp_path))
    records = jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4]
    assert records[-1]["loss"] == round(result.losses[-1], 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def _items(n: int = 16) -> list[dict[str, list[int]]]:
    return tiny_train_items(n)


def test_resumed_stage_logs_every_step_once(tmp_path):
    """Run 1 logs steps 1..12 and leaves the checkpoint of step 10; run 2 resumes from it and logs
    11..12 again: metrics.jsonl and TensorBoard each keep one value per step, the resumed one."""
    pytest.importorskip("tensorboard")
    cfg = resolve(overrides=["svf.train.steps=12", "svf.train.batch_size=4", "svf.train.checkpoint_every=5"]).svf.train
    spec = CheckpointSpec(tmp_path / "ckpt", cfg.checkpoint_every, "digest")
    log = MetricsLog(tmp_path, LogConfig(report_to=["tensorboard"]))
    for _ in range(2):
        model = make_tiny_model("llama", seed=0)
        add_svf(model, "linear", None, progress=False)
        train(model, _items(), TrainCollator(0), cfg, seed=0, stage="svf", progress=False, checkpoint=spec, log=log)
    records = jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 13))
    assert len(list((tmp_path / "tensorboard" / "svf").glob("events.out.tfevents.*"))) == 2  # both attempts
    assert_same_curves(records, event_scalars(tmp_path / "tensorboard" / "svf"), "svf")


def test_unknown_tracker_is_refused():
    with pytest.raises(ConfigError, match=r"log.report_to='mlflow': unknown tracker; known: tensorboard, wandb"):
        resolve(overrides=["log.report_to=[mlflow]"])
    with pytest.raises(ConfigError, match="repeated"):
        resolve(overrides=["log.report_to=tensorboard,tensorboard"])
    assert resolve(overrides=["log.report_to=tensorboard,wandb"]).log.report_to == ["tensorboard", "wandb"]
    assert RunConfig().log == LogConfig([], "palora", None)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, data, capsys):  # noqa: F811
    with pytest.raises(ConfigError, match=r"wandb is not installed: pip install 'wandb<1,>=0.16' \(in palora's clone"):
        MetricsLog(tmp_path, LogConfig(report_to=["wandb"]))
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    assert main(run_args(model, data, out) + ["--set", "log.report_to=[wandb]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'wandb<1,>=0.16'" in err and "'.[wandb]'" in err
    assert not (out / "svf_expert.safetensors").exists() and not (out / "metrics.jsonl").exists()


def test_wandb_offline(tmp_path, monkeypatch):
    """W&B for real, offline: the run's summary holds the last logged numbers."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    model = make_tiny_model("llama", seed=0)
    add_svf(model, "linear", None, progress=False)
    cfg = resolve(overrides=["svf.train.steps=3", "svf.train.batch_size=2"]).svf.train
    log = MetricsLog(tmp_path / "run", LogConfig(report_to=["wandb"], run_name="tiny"), {"seed": 0})
    train(model, _items(), TrainCollator(0), cfg, seed=0, stage="svf", progress=False, log=log)
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    summary = json.loads((run / "files" / "wandb-summary.json").read_text())
    last = jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert summary["svf/loss"] == pytest.approx(last["loss"], rel=1e-6)
