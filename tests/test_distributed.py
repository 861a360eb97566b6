"""Two CPU processes (gloo, launched by torchrun) give the run of one process with the same global
batch, data parallel (DDP) and sharded (FSDP2): the SVD is split across the ranks and broadcast,
gradients are averaged over the global batch's tokens, rank 0 alone writes files and logs, and
under FSDP2 the orthogonal projection still holds and a checkpoint gathered from the shards
resumes exactly.

Tolerance: float32 all-reduce sums in another order than one process, so parameters agree to
1e-5 absolute (seen: 3e-7 on z, 3e-8 on the adapters), not bitwise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from test_cli import data, write_jsonl  # noqa: F401  (the module-scoped data fixture)
from tiny import save_tiny_checkpoint

TOLERANCE = 1e-5
ARTIFACTS = ("svf_expert.safetensors", "subspace.safetensors", "methods/palora/adapter/adapter_model.safetensors",
             "methods/lora/adapter/adapter_model.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(model: Path, data: dict[str, str], out: Path, batch: int) -> list[str]:  # noqa: F811
    return ["-m", "palora", "run", "--model", str(model), "--skill-train", data["skill_train"],
            "--skill-eval", data["skill_eval"], "--knowledge-train", data["knowledge_train"],
            "--knowledge-eval", data["knowledge_eval"], "--out", str(out), "--methods", "palora,lora", "--seed", "0",
            "--quiet", "--set", "svf.train.steps=6", "--set", "svf.train.lr=0.05", "--set", "inject.train.steps=6",
            "--set", "inject.rank=4", "--set", "eval.max_new_tokens=4", "--set", "eval.limit=4",
            "--set", f"svf.train.batch_size={batch}", "--set", f"inject.train.batch_size={batch}"]


def _max_diff(a: Path, b: Path) -> float:
    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        assert set(fa.keys()) == set(fb.keys())
        return max(float((fa.get_tensor(k).float() - fb.get_tensor(k).float()).abs().max()) for k in fa.keys())  # noqa: SIM118


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(_free_port()), *args]


def _accelerate(*args: str) -> list[str]:
    # accelerate's --cpu flag starts a single process unless MPI is set up; --multi_gpu starts
    # torchrun-style processes, which take the gloo backend on a machine without GPUs
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def single(tmp_path_factory, data):  # noqa: F811
    root = tmp_path_factory.mktemp("single")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    subprocess.run([sys.executable, *_args(model, data, root / "one", batch=8)], check=True, env=ENV,
                   capture_output=True)
    return model, root / "one"


@pytest.mark.parametrize(("launcher", "sharding"), [(_torchrun, "none"), (_torchrun, "fsdp2"), (_accelerate, "none")],
                         ids=["torchrun-ddp", "torchrun-fsdp2", "accelerate-ddp"])
def test_two_processes_match_one_with_the_same_global_batch(single, data, tmp_path, launcher, sharding):  # noqa: F811
    model, one = single
    two = tmp_path / "two"
    extra = ["--set", f"svf.train.sharding={sharding}", "--set", f"inject.train.sharding={sharding}",
             "--set", "svf.train.checkpoint_every=2", "--set", "inject.train.checkpoint_every=2"]
    launched = subprocess.run(launcher(*_args(model, data, two, batch=4), *extra), env=ENV, capture_output=True,
                              text=True)
    assert launched.returncode == 0, launched.stderr[-3000:]

    for name in ARTIFACTS:
        assert _max_diff(one / name, two / name) < TOLERANCE, name
    stages = json.loads((two / "stages.json").read_text())
    assert stages["inject:palora"]["certificate_in"] < 1e-5 and stages["inject:palora"]["certificate_out"] < 1e-5
    assert all(stages[k]["processes"] == 2 and stages[k]["sharded"] == (sharding == "fsdp2")
               for k in ("svf", "inject:palora", "inject:lora"))
    # rank 0 alone logged and printed: one metrics line per step and stage, one table
    lines = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len((one / "metrics.jsonl").read_text().splitlines()) == 18
    assert launched.stdout.count("| expert |") == 1
    rows_one = [r["name"] for r in json.loads((one / "report.json").read_text())["rows"]]
    assert rows_one == [r["name"] for r in json.loads((two / "report.json").read_text())["rows"]]


def test_fsdp2_checkpoint_resumes_exactly_and_keeps_the_projection(tmp_path):
    """tests/fsdp2_resume.py under torchrun: sharded parameters, resume from a gathered checkpoint
    with zero difference, certificate of the rebuilt adapter < 1e-5."""
    script = Path(__file__).parent / "fsdp2_resume.py"
    done = subprocess.run(_torchrun(str(script), str(tmp_path / "ckpt")), env=ENV, capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK resumed-diff=0.00e+00" in done.stdout
