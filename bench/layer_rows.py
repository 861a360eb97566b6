"""Rows measured on one 8B-shaped layer (random weights): LoRA, PALoRA and SVF against the dense
frozen layer, in one process, in turns (bench/timer.py).

A Llama-3.1-8B MLP matrix ``W`` (14336 x 4096, bf16) on 8192 tokens; a step is the forward pass
and the backward pass for an upstream gradient ``∂y`` (the input ``x`` needs its gradient, as
inside a model), under ``parametrize.cached()`` for every method alike. LoRA and PALoRA are the
real peft LoRA of :func:`palora.core.orthogonal.add_lora` (rank 16, alpha 32; peft keeps A and B in
float32); PALoRA protects ``k = 512`` components on both sides. SVF is
:class:`palora.core.svf.SVFLinear` letting its cost model choose, then forced to each form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import nn
from torch.nn.utils import parametrize

from memory_model import Matrix, injection_state_bytes, svf_state_bytes
from palora.core.linalg import SVD, thin_svd
from palora.core.orthogonal import add_lora
from palora.core.subspace import Subspace
from palora.core.svf import SVFLinear, svf_path
from palora.core.targets import Target
from palora.training.memory import MemProbe
from table import Row, memory_model_row, ratio_row
from timer import alternate, median


@dataclass
class LayerSettings:
    m: int = 14336
    n: int = 4096
    tokens: int = 8192
    rank: int = 16
    k: int = 512
    dtype: torch.dtype = torch.bfloat16
    reps: int = 20
    warmup: int = 3
    inner: int = 5  # calls per timed sample


class OneMatrix(nn.Module):
    """A model made of one linear layer, for peft to wrap as it wraps a target of a real model."""

    def __init__(self, proj: nn.Linear):
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def random_linear(s: LayerSettings, device: torch.device, seed: int = 0) -> nn.Linear:
    g = torch.Generator(device=device).manual_seed(seed)
    layer = nn.Linear(s.n, s.m, bias=False, device=device, dtype=s.dtype)
    with torch.no_grad():
        layer.weight.copy_(0.02 * torch.randn(s.m, s.n, generator=g, device=device, dtype=torch.float32))
    layer.weight.requires_grad_(False)
    return layer


def lora(base: nn.Linear, rank: int, subspace: Subspace | None) -> PeftModel:
    """peft LoRA on ``base`` (shared, not copied), projected away from ``subspace`` when given."""
    torch.manual_seed(0)
    model = add_lora(OneMatrix(base), [Target("proj", base)], rank, 2.0 * rank,
                     subspaces=None if subspace is None else {"proj": subspace}, task_type=None)
    return model


def step_fn(module: nn.Module, x: torch.Tensor, dy: torch.Tensor, before: Callable[[], None] | None = None
            ) -> Callable[[], None]:
    params = [p for p in module.parameters() if p.requires_grad]

    def step() -> None:
        if before is not None:
            before()
        with parametrize.cached():
            module(x).backward(dy)
        x.grad = None
        for p in params:
            p.grad = None

    return step


def inputs(s: LayerSettings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(s.tokens, s.n, generator=g, device=device).to(s.dtype).requires_grad_(True)
    dy = torch.randn(s.tokens, s.m, generator=g, device=device).to(s.dtype)
    return x, dy


def timing_rows(base: nn.Linear, svd: SVD, subspace: Subspace, s: LayerSettings, device: torch.device) -> list[Row]:
    x, dy = inputs(s, device)
    svf = SVFLinear(base, svd, "linear")

    def force(path: str | None) -> Callable[[], None]:
        return lambda: setattr(svf, "path", path)

    fns = {
        "dense": step_fn(base, x, dy),
        "lora": step_fn(lora(base, s.rank, None), x, dy),
        "palora": step_fn(lora(base, s.rank, subspace), x, dy),
        "svf": step_fn(svf, x, dy, force(None)),
        "svf_factored": step_fn(svf, x, dy, force("factored")),
        "svf_recomposed": step_fn(svf, x, dy, force("recomposed")),
    }
    t = {k: median(v) for k, v in alternate(fns, device, s.reps, s.warmup, s.inner).items()}
    shape = f"{s.m}x{s.n} {str(s.dtype).removeprefix('torch.')}, {s.tokens} tokens, forward+backward"
    chosen = svf_path(s.tokens, s.m, s.n, min(s.m, s.n), grad_z=True, grad_x=True)
    dev = device.type
    return [
        ratio_row("injection_step", t["palora"], t["lora"], 1.02, "s/step", dev,
                  note=f"PALoRA vs peft LoRA, r={s.rank}, k={s.k} both sides; {shape}; dense {t['dense']:.3g} s"),
        ratio_row("lora_step_vs_dense", t["lora"], t["dense"], None, "s/step", dev, note=f"peft LoRA r={s.rank}; {shape}"),
        ratio_row("svf_step", t["svf"], t["dense"], 1.4, "s/step", dev, note=f"SVF (cost model chose {chosen}) vs "
                  f"the frozen layer; {shape}"),
        ratio_row("svf_factored_vs_dense", t["svf_factored"], t["dense"], None, "s/step", dev, note=shape),
        ratio_row("svf_recomposed_vs_dense", t["svf_recomposed"], t["dense"], None, "s/step", dev, note=shape),
    ]


def memory_rows(base: nn.Linear, svd: SVD, subspace: Subspace, s: LayerSettings, device: torch.device) -> list[Row]:
    """Per method, from the layer and its input (the setup): the adapter's state, and the peak
    over building it and two steps. On CUDA the allocator's counts are exact."""
    probe = MemProbe(device)
    x, dy = inputs(s, device)
    measured: dict[str, tuple[int, int]] = {}
    for name in ("lora", "palora", "svf"):
        setup = probe.current()
        probe.reset_peak()
        module = SVFLinear(base, svd, "linear") if name == "svf" else lora(base, s.rank, subspace if name == "palora" else None)
        state = probe.current() - setup
        step = step_fn(module, x, dy)
        for _ in range(2):
            step()
        measured[name] = (state, probe.peak() - setup)
        del module, step
    w = Matrix(s.m, s.n)
    b = torch.empty((), dtype=s.dtype).element_size()
    dev = device.type
    return [
        ratio_row("injection_peak_memory", measured["palora"][1] / 1e6, measured["lora"][1] / 1e6, 1.05, "MB", dev,
                  note=f"peak above layer + input, r={s.rank}, k={s.k}; {s.m}x{s.n}, {s.tokens} tokens"),
        memory_model_row("memory_model_injection", measured["palora"][0], injection_state_bytes(w, s.rank, s.k), dev,
                         "PALoRA adapter of one matrix (A, B, U_S, V_S) vs bench/memory_model.py"),
        memory_model_row("memory_model_svf", measured["svf"][0], svf_state_bytes(w, b), dev,
                         "SVF layer of one matrix (U, V in the model dtype, σ, z) vs bench/memory_model.py"),
    ]


def layer_rows(s: LayerSettings, device: torch.device) -> list[Row]:
    base = random_linear(s, device)
    svd = thin_svd(base.weight)  # float32, on the device
    subspace = Subspace.from_svd(svd, torch.arange(0, min(s.m, s.n), min(s.m, s.n) // s.k)[: s.k])
    return timing_rows(base, svd, subspace, s, device) + memory_rows(base, svd, subspace, s, device)
