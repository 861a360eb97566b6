"""Two CPU processes (gloo, launched by torchrun) give the run of one process with the same global
batch: the SVD is split across the ranks and broadcast, gradients are averaged over the global
batch's tokens, and rank 0 alone writes files and logs.

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


def test_two_processes_match_one_with_the_same_global_batch(data, tmp_path):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *_args(model, data, one, batch=8)], check=True, env=env, capture_output=True)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         *_args(model, data, two, batch=4)], env=env, capture_output=True, text=True)
    assert launched.returncode == 0, launched.stderr[-3000:]

    for name in ARTIFACTS:
        assert _max_diff(one / name, two / name) < TOLERANCE, name
    stages = json.loads((two / "stages.json").read_text())
    assert stages["inject:palora"]["certificate_in"] < 1e-5 and stages["inject:palora"]["certificate_out"] < 1e-5
    # rank 0 alone logged and printed: one metrics line per step and stage, one table
    lines = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len((one / "metrics.jsonl").read_text().splitlines()) == 18
    assert launched.stdout.count("| expert |") == 1
    rows_one = [r["name"] for r in json.loads((one / "report.json").read_text())["rows"]]
    assert rows_one == [r["name"] for r in json.loads((two / "report.json").read_text())["rows"]]
