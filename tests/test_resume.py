"""Resume after a crash: checkpoints restore the exact training state, a `kill -9`-ed `palora run`
rerun with the same command finishes with the artifacts of an uninterrupted run, finished stages
are not redone, and a run directory made with other settings is refused (or, with --overwrite,
exactly its stale stages are redone)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from palora.cli import main
from palora.config import TrainConfig
from palora.core.linalg import iter_svd
from palora.core.orthogonal import add_lora
from palora.core.subspace import Subspace
from palora.core.svf import add_svf
from palora.core.targets import find_targets
from palora.io.data import TrainCollator
from palora.training.checkpoint import CheckpointSpec
from palora.training.loop import train
from test_cli import data, write_jsonl  # noqa: F401  (the module-scoped data fixture)
from tiny import make_tiny_model, save_tiny_checkpoint, tiny_train_items

# ----------------------------------------------------------------------------- the loop itself


def _items(n: int = 24) -> list[dict[str, list[int]]]:
    return tiny_train_items(n)


def _svf_model():
    torch.manual_seed(0)
    model = make_tiny_model("llama", seed=0)
    add_svf(model, "linear", None, progress=False)
    return model


def _orthogonal_lora_model():
    torch.manual_seed(0)
    model = make_tiny_model("llama", seed=0)
    targets = find_targets(model, None)
    subspaces = {t.name: Subspace.from_svd(svd, torch.arange(0, 24, 2)) for t, svd in iter_svd(targets)}
    return add_lora(model, targets, 4, 8, 0.0, subspaces=subspaces, side="both")


def _trained(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("build", [_svf_model, _orthogonal_lora_model], ids=["svf", "orthogonal-lora"])
def test_resumed_loop_is_bitwise_the_uninterrupted_one(tmp_path, build):
    """Run 1 trains 20 steps and leaves the checkpoint of step 15; run 2 (a fresh model, the same
    spec) starts from it and must end on exactly run 1's parameters and losses."""
    cfg = TrainConfig(steps=20, batch_size=4, lr=5e-2, checkpoint_every=5, warmup_ratio=0.1)
    spec = CheckpointSpec(tmp_path / "ckpt", cfg.checkpoint_every, "digest-a")
    collate = TrainCollator(0)

    first = build()
    r1 = train(first, _items(), collate, cfg, seed=3, stage="svf", progress=False, checkpoint=spec)
    saved = json.loads((spec.folder / "state.json").read_text())
    assert saved["step"] == 15 and saved["losses"] == r1.losses[:15]

    second = build()
    r2 = train(second, _items(), collate, cfg, seed=3, stage="svf", progress=False, checkpoint=spec)
    assert r2.losses == r1.losses
    a, b = _trained(first), _trained(second)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)

    # a checkpoint made for other inputs (another digest) is ignored: the loop starts at step 1
    other = CheckpointSpec(spec.folder, 5, "digest-b")
    third = build()
    r3 = train(third, _items(), collate, cfg, seed=3, stage="svf", progress=False, checkpoint=other)
    assert r3.losses == r1.losses


# ----------------------------------------------------------------------------- kill -9 and rerun

SLOW = ["--set", "svf.train.steps=40", "--set", "svf.train.checkpoint_every=5",
        "--set", "inject.train.steps=400", "--set", "inject.train.checkpoint_every=10",
        "--set", "svf.train.batch_size=4", "--set", "inject.train.batch_size=4", "--set", "inject.rank=4",
        "--set", "eval.limit=4", "--set", "eval.max_new_tokens=4", "--quiet"]


def _command(model: Path, data: dict[str, str], out: Path) -> list[str]:  # noqa: F811
    return [sys.executable, "-m", "palora", "run", "--model", str(model), "--skill-train", data["skill_train"],
            "--skill-eval", data["skill_eval"], "--knowledge-train", data["knowledge_train"],
            "--knowledge-eval", data["knowledge_eval"], "--out", str(out), "--methods", "palora,lora",
            "--seed", "0", *SLOW]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _metrics(report: Path) -> list[dict]:
    keys = ("name", "skill_accuracy", "knowledge_recall", "retention", "trainable_parameters")
    return [{k: r[k] for k in keys} for r in json.loads(report.read_text())["rows"]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):  # noqa: F811
    root = tmp_path_factory.mktemp("resume")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "reference"
    subprocess.run(_command(model, data, out), check=True, env=_env(), capture_output=True)
    return model, out


def test_kill_9_then_the_same_command_finishes_the_same_run(uninterrupted, data, tmp_path):  # noqa: F811
    model, reference = uninterrupted
    out = tmp_path / "killed"
    command = _command(model, data, out)
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = out / "checkpoints" / "inject-lora" / "state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-stage"
    killed_at = json.loads(checkpoint.read_text())["step"]
    assert 0 < killed_at < 400
    assert not (out / "methods" / "lora" / "adapter").exists() and not (out / "report.json").exists()
    stages_before = json.loads((out / "stages.json").read_text())
    assert {"svf", "probe", "inject:palora"} <= set(stages_before) and "inject:lora" not in stages_before

    done = subprocess.run(command, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "svf: already done" in done.stdout and "inject:palora: already done" in done.stdout
    assert f"inject:lora: resumed from the checkpoint of step {killed_at}" in done.stdout + done.stderr

    stages_after = json.loads((out / "stages.json").read_text())
    for key in ("svf", "probe", "inject:palora"):  # not redone: the very same records
        assert stages_after[key] == stages_before[key]
    for name in ("svf_expert.safetensors", "subspace.safetensors", "methods/palora/adapter/adapter_model.safetensors",
                 "methods/lora/adapter/adapter_model.safetensors", "expert_model/model.safetensors"):
        a, b = _tensors(reference / name), _tensors(out / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    assert _metrics(out / "report.json") == _metrics(reference / "report.json")
    assert not (out / "checkpoints" / "inject-lora").exists()  # a finished stage drops its checkpoint
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in logged if x["stage"] == "inject:lora"]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # no step logged twice

    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True)  # all done: nothing redone
    assert rerun.returncode == 0 and "eval: already done" in rerun.stdout
    assert json.loads((out / "stages.json").read_text()) == stages_after


# ----------------------------------------------------------------------------- another run's directory

FAST = ["--set", "svf.train.steps=3", "--set", "inject.train.steps=3", "--set", "eval.limit=4",
        "--set", "svf.train.batch_size=4", "--set", "inject.train.batch_size=4", "--set", "inject.rank=4",
        "--set", "eval.max_new_tokens=4", "--set", "inject.methods=[palora,lora]", "--quiet"]


def _run_argv(model: Path, data: dict[str, str], out: Path, *extra: str) -> list[str]:  # noqa: F811
    return ["run", "--model", str(model), "--skill-train", data["skill_train"], "--skill-eval", data["skill_eval"],
            "--knowledge-train", data["knowledge_train"], "--knowledge-eval", data["knowledge_eval"],
            "--out", str(out), "--methods", "palora,lora", "--seed", "0", *FAST, *extra]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_other_settings_are_refused_then_overwrite_redoes_only_what_they_change(data, tmp_path, capsys):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    assert main(_run_argv(model, data, out)) == 0
    before = _snapshot(out)
    capsys.readouterr()

    assert main(_run_argv(model, data, out, "--set", "inject.rank=2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other settings" in err and "inject.rank" in err and "--overwrite" in err
    assert _snapshot(out) == before  # nothing touched, config.yaml included

    stages = json.loads((out / "stages.json").read_text())
    assert main(_run_argv(model, data, out, "--set", "inject.rank=2", "--overwrite")) == 0
    after = json.loads((out / "stages.json").read_text())
    assert after["svf"] == stages["svf"] and after["probe"] == stages["probe"]  # kept
    assert after["inject:lora"]["digest"] != stages["inject:lora"]["digest"]  # redone
    assert after["inject:lora"]["trainable_parameters"] == stages["inject:lora"]["trainable_parameters"] // 2
    assert _snapshot(out)["svf_expert.safetensors"] == before["svf_expert.safetensors"]

    # a changed data file is another run too (the digest covers the bytes, not the path)
    Path(data["knowledge_train"]).write_text(Path(data["knowledge_train"]).read_text() + '{"text": "More."}\n')
    try:
        assert main(_run_argv(model, data, out, "--set", "inject.rank=2")) == 2
        assert "inject:palora" in capsys.readouterr().err
    finally:
        lines = Path(data["knowledge_train"]).read_text().splitlines(keepends=True)[:-1]
        Path(data["knowledge_train"]).write_text("".join(lines))


def test_stage_verbs_resume_too(data, tmp_path, capsys):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    svf = ["svf", "--model", str(model), "--skill-train", data["skill_train"], "--out", str(out), *FAST]
    assert main(svf) == 0
    assert main(svf) == 0 and "svf: already done" in capsys.readouterr().out
    assert main(["probe", "--out", str(out), *FAST]) == 0
    assert main(["probe", "--out", str(out), *FAST, "--set", "probe.fraction=0.1"]) == 2
    assert "probe.fraction" in capsys.readouterr().err
    assert main(["probe", "--out", str(out), *FAST, "--set", "probe.fraction=0.1", "--overwrite"]) == 0
    stages = json.loads((out / "stages.json").read_text())
    assert stages["probe"]["rule"] == "fraction=0.1"


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path, capsys):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    argv = ["svf", "--model", str(model), "--skill-train", data["skill_train"], "--out", str(out), *FAST,
            "--set", "svf.train.steps=30", "--set", "svf.train.checkpoint_every=1", "--set", "svf.train.lr=1e30",
            "--set", "svf.train.max_grad_norm=0", "--set", "svf.train.warmup_ratio=0"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    m = re.search(r"loss became (nan|inf) at step (\d+); the last good checkpoint \(step (\d+)\) is kept in (\S+);", err)
    assert m and len(err.splitlines()) == 1, err
    bad, kept = int(m.group(2)), int(m.group(3))
    assert kept == bad - 1
    state = json.loads((out / "checkpoints" / "svf" / "state.json").read_text())
    assert state["step"] == kept and all(math.isfinite(x) for x in state["losses"])
    assert not (out / "svf_expert.safetensors").exists()
