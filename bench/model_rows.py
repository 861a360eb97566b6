"""Rows measured on a whole causal LM (default: the packaged SmolLM2-135M-Instruct), on the CPU.

* ``injection_step``: one training step (forward, backward, AdamW) of PALoRA against peft LoRA,
  same rank and targets, protecting every ``protect_every``-th singular component on both sides
  (default 8: ``k = r/8``, the proportion of the 8B anchor's k = 512 of 4096; 2 is the demo's
  probe fraction, whose bases cost far more memory: bench/memory_model.py);
* ``svf_step``: one SVF step against the frozen base, gradients flowing to the input
  embeddings in both so that the base's backward pass is the same work;
* ``injection_peak_memory``, ``memory_model_*``: each method trained alone in a fresh process
  (bench/peak_memory.py);
* ``merged_generation``, ``eval_throughput``: bench/generation.py;
* ``decomposition_model``, ``decomposition``: bench/decomposition.py, on the model's matrices and
  on one matrix of Llama-3.1-8B's shape (scaled to its 96);
* ``demo_wall_time``: read from a finished ``palora demo`` run, never estimated.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from decomposition import decomposition_row, model_decomposition
from generation import build_merged, eval_throughput_row, merged_generation_row, precomputed
from palora.config import ModelConfig
from palora.core.linalg import SVD, fingerprint, thin_svd
from palora.core.orthogonal import add_lora
from palora.core.subspace import Subspace
from palora.core.svf import add_svf, svf_path
from palora.core.targets import find_targets, weight_matrix
from palora.io.artifacts import save_subspace
from palora.io.models import load_model_and_tokenizer
from palora.training.memory import make_resident
from table import Row, memory_model_row, ratio_row
from timer import alternate, median

HERE = Path(__file__).resolve().parent
#: the demo's wall-time budget on the 2-core CPU (seconds)
DEMO_BUDGET_S = 20 * 60


@dataclass
class Settings:
    model: str
    quick: bool
    threads: int  # 0: torch's default
    reps: int
    warmup: int
    batch: int  # training batch: sequences x tokens
    seq: int
    gen_batch: int  # merged-model generation
    gen_prompt: int
    gen_new: int
    eval_items: int  # evaluation throughput
    eval_new: int
    protect_every: int  # k = r / protect_every components protected, spread over the spectrum
    rank: int = 16
    alpha: float = 32.0
    memory_steps: int = 2

    @classmethod
    def make(cls, model: str, quick: bool, threads: int, protect_every: int = 8) -> Settings:
        if quick:
            return cls(model, quick, threads, reps=3, warmup=1, batch=2, seq=32, gen_batch=2, gen_prompt=8,
                       gen_new=4, eval_items=4, eval_new=4, protect_every=protect_every)
        # the demo's injection batch: 16 short sequences (about 1.6 s per step on the 2-core CPU)
        return cls(model, quick, threads, reps=9, warmup=2, batch=16, seq=48, gen_batch=8, gen_prompt=32,
                   gen_new=32, eval_items=64, eval_new=16, protect_every=protect_every)


def decompose(model: nn.Module) -> dict[str, SVD]:
    return {t.name: thin_svd(weight_matrix(t.module)) for t in find_targets(model)}


def spread_subspaces(svds: dict[str, SVD], every: int) -> dict[str, Subspace]:
    """Every ``every``-th singular component of each matrix, top and bottom of the spectrum included."""
    return {name: Subspace.from_svd(svd, torch.arange(0, svd.S.numel(), every)) for name, svd in svds.items()}


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], after: Callable[[], None] | None = None
               ) -> Callable[[], None]:
    """One step as palora's loop takes it: forward and backward inside ``parametrize.cached()``,
    then AdamW on the trainable parameters (none: no optimizer step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5) if params else None

    def step() -> None:
        with parametrize.cached():
            model(**batch).loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if after is not None:
            after()

    return step


def injection_step_row(base: nn.Module, subspaces: dict[str, Subspace], ids: torch.Tensor, s: Settings) -> Row:
    models = {}
    for name, subs in (("lora", None), ("palora", subspaces)):
        model = copy.deepcopy(base)
        torch.manual_seed(0)
        models[name] = add_lora(model, find_targets(model), s.rank, s.alpha, subspaces=subs).train()
    batch = {"input_ids": ids, "labels": ids}
    times = alternate({k: train_step(m, batch) for k, m in models.items()}, torch.device("cpu"), s.reps, s.warmup)
    k = next(iter(subspaces.values())).k
    return ratio_row("injection_step", median(times["palora"]), median(times["lora"]), 1.05, "s/step", "cpu",
                     note=f"{len(subspaces)} targets, r={s.rank}, k={k} both sides, batch {ids.shape[0]}x{ids.shape[1]},"
                          " forward+backward+AdamW")


def svf_step_row(base: nn.Module, svds: dict[str, SVD], ids: torch.Tensor, s: Settings) -> Row:
    svf = copy.deepcopy(base)
    add_svf(svf, "linear", progress=False, decompose=precomputed(svds))
    svf.train()
    base.train()
    embeds = base.get_input_embeddings()(ids).detach().requires_grad_(True)  # (B, T, h), same for both

    def clear() -> None:
        embeds.grad = None

    batch = {"inputs_embeds": embeds, "labels": ids}
    times = alternate({"frozen": train_step(base, batch, clear), "svf": train_step(svf, batch, clear)},
                      torch.device("cpu"), s.reps, s.warmup)
    base.eval()
    tokens = ids.numel()
    paths = sorted({svf_path(tokens, *t.shape, min(t.shape), grad_z=True, grad_x=True) for t in find_targets(base)})
    return ratio_row("svf_step", median(times["svf"]), median(times["frozen"]), 1.4, "s/step", "cpu",
                     note=f"{len(svds)} targets, batch {ids.shape[0]}x{ids.shape[1]}, forward+backward(+Adam on z); "
                          f"path chosen: {', '.join(paths)}")


def _child(method: str, s: Settings, subspace_file: Path | None) -> dict:
    """bench/peak_memory.py in a fresh process; every allocation from 64 KiB is its own mapping,
    returned to the system when freed, so that the resident size follows the live tensors."""
    cmd = [sys.executable, str(HERE / "peak_memory.py"), "--method", method, "--model", s.model,
           "--batch", str(s.batch), "--seq", str(s.seq), "--steps", str(s.memory_steps),
           "--rank", str(s.rank), "--alpha", str(s.alpha), "--threads", str(s.threads)]
    if subspace_file is not None:
        cmd += ["--subspace", str(subspace_file)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(base: nn.Module, subspaces: dict[str, Subspace], s: Settings) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subspace.safetensors"
        fp = fingerprint(find_targets(base))
        save_subspace(path, subspaces, fp, fp, rule=f"every {s.protect_every}", score="bench")
        results = {m: _child(m, s, path if m == "palora" else None) for m in ("lora", "palora", "svf")}
    lora, palora, svf = results["lora"], results["palora"], results["svf"]
    reset = all(r["peak_reset"] for r in results.values())
    k = next(iter(subspaces.values())).k
    peak = ratio_row("injection_peak_memory", palora["peak"] / 1e6, lora["peak"] / 1e6, 1.05, "MB", "cpu",
                     note=f"peak RSS above the loaded model, fresh process each, {s.memory_steps} steps of "
                          f"{s.batch}x{s.seq}, k={k}" + ("" if reset else "; peak NOT reset after setup"),
                     setup_mb=palora["setup"] / 1e6)
    return [
        peak,
        memory_model_row("memory_model_injection", palora["state"], palora["predicted_state"], "cpu",
                         "PALoRA adapter before training (A, B, U_S, V_S): RSS growth vs bench/memory_model.py",
                         targets=palora["targets"]),
        memory_model_row("memory_model_svf", svf["state"], svf["predicted_state"], "cpu",
                         "SVF layers before training (U, V, σ, z): RSS growth vs bench/memory_model.py",
                         targets=svf["targets"]),
    ]


def demo_row(run_dir: str | None) -> Row:
    """The sum of the stage wall times a finished ``palora demo`` run recorded in stages.json."""
    target = f"<= {DEMO_BUDGET_S}"
    if run_dir is None:
        return Row("demo_wall_time", None, None, target, "s", "cpu",
                   note="not measured: pass --demo-run DIR of a finished `palora demo --out DIR`")
    stages = json.loads((Path(run_dir) / "stages.json").read_text(encoding="utf-8"))
    total = sum(float(v["wall_time_s"]) for v in stages.values() if isinstance(v, dict) and "wall_time_s" in v)
    finished = "eval" in stages
    row = Row("demo_wall_time", total, None, target, "s", "cpu",
              note=f"sum of the stage wall times in {run_dir}/stages.json ({', '.join(stages)}); model loading "
                   "between stages not included" + ("" if finished else "; the run is NOT finished (no eval stage)"))
    row.ok = total <= DEMO_BUDGET_S if finished else None
    return row


def cpu_rows(model_name: str, quick: bool, threads: int, demo_run: str | None, log: Callable[[str], None],
             protect_every: int = 8) -> list[Row]:
    s = Settings.make(model_name, quick, threads, protect_every)
    base, tokenizer = load_model_and_tokenizer(ModelConfig(name=model_name))
    make_resident(base).eval()  # the copies made below live in process memory too
    for p in base.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, base.config.vocab_size, (s.batch, s.seq), generator=g)
    log(f"decomposing the {len(find_targets(base))} target matrices of {model_name}")
    svds, decomposition = model_decomposition(base, model_name, torch.device("cpu"))
    subspaces = spread_subspaces(svds, s.protect_every)
    rows: list[Row] = []
    log("injection_step")
    rows.append(injection_step_row(base, subspaces, ids, s))
    log("svf_step")
    rows.append(svf_step_row(base, svds, ids, s))
    log("peak memory (fresh processes)")
    rows += memory_rows(base, subspaces, s)
    log("merged_generation")
    merged = build_merged(base, svds, subspaces, s.rank, s.alpha)
    gen_ids = torch.randint(3, base.config.vocab_size, (s.gen_batch, s.gen_prompt), generator=g)
    rows.append(merged_generation_row(base, merged, gen_ids, s.gen_new, s.reps, s.warmup, torch.device("cpu")))
    del merged
    log("eval_throughput")
    rows.append(eval_throughput_row(base, tokenizer, s.eval_items, s.eval_new, max(2, s.reps // 3), 1,
                                    torch.device("cpu")))
    log("decomposition of one 8B-shaped matrix")
    cpu = torch.device("cpu")
    rows.append(decomposition)  # timed when the model was decomposed, above
    rows.append(decomposition_row(cpu, layers=1, hidden=64, intermediate=224, baseline_matrices=0) if quick
                else decomposition_row(cpu, measured_matrices=1, baseline_matrices=0))
    rows.append(demo_row(demo_run))
    return rows
