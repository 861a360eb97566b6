"""Memory model: bytes each stage holds per target matrix, and the totals of a whole model.

For a target ``W`` (m x n), ``r = min(m, n)``, LoRA rank ``ρ``, ``k`` protected components,
``b`` bytes per element of the model dtype (2 for bf16, 4 for float32); peft keeps the LoRA
factors of a bf16/fp16 model in float32 (``autocast_adapter_dtype``), so they count 4 bytes:

======================  ==========================================  =========================
stage                   tensor                                      bytes
======================  ==========================================  =========================
every stage             W (the frozen weight, or W_z)               b·m·n
SVF                     U (m x r), V (n x r), model dtype           b·r·(m + n)
SVF                     σ, z, ∂z, Adam m and v (float32)            5 · 4·r
probe (artifact)        U_S (m x k), V_S (n x k) float32, indices   4·k·(m + n) + 8·k
injection               A (ρ x n), B (m x ρ) float32                4·ρ·(m + n)
injection               ∂A, ∂B, Adam m and v                        3 · 4·ρ·(m + n)
injection (PALoRA)      U_S, V_S buffers (float32)                  4·k·(m + n)
injection (PALoRA)      A', B' (live during a forward/backward)     4·ρ·(m + n)
======================  ==========================================  =========================

Activations are not counted: they grow with the batch, and are the same for LoRA and PALoRA
(the projections act on the parameters, no per-token intermediate); SVF's factored form saves
``x V`` (T x r, model dtype) per matrix for its backward pass, which the frozen model does not.
``python bench/memory_model.py [--model smollm2-135m --bytes 4 --k 72]`` prints the tables of
docs/benchmarks.md (default: Llama-3.1-8B in bf16, k = 512 and 2048).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

F32 = 4


@dataclass(frozen=True)
class Matrix:
    m: int  # out features
    n: int  # in features

    @property
    def r(self) -> int:
        return min(self.m, self.n)


def svf_state_bytes(w: Matrix, b: int) -> int:
    """What :func:`palora.core.svf.add_svf` adds to a matrix before training: U, V, σ, z."""
    return b * w.r * (w.m + w.n) + 2 * F32 * w.r


def svf_training_bytes(w: Matrix, b: int) -> int:
    """SVF state plus ∂z and Adam's two moments of z."""
    return svf_state_bytes(w, b) + 3 * F32 * w.r


def subspace_bytes(w: Matrix, k: int) -> int:
    """The probe's artifact for one matrix: U_S, V_S (float32) and the int64 indices."""
    return F32 * k * (w.m + w.n) + 8 * k


def injection_state_bytes(w: Matrix, rank: int, k: int) -> int:
    """What the adapter adds before training: A, B (float32) and, for PALoRA, U_S, V_S (k = 0: LoRA)."""
    return F32 * rank * (w.m + w.n) + F32 * k * (w.m + w.n)


def injection_training_bytes(w: Matrix, rank: int, k: int) -> int:
    """Adapter state plus ∂A, ∂B, Adam's moments and, for PALoRA, the live A', B'."""
    extra = 3 * F32 * rank * (w.m + w.n) + (F32 * rank * (w.m + w.n) if k else 0)
    return injection_state_bytes(w, rank, k) + extra


@dataclass(frozen=True)
class Model:
    name: str
    layers: int
    hidden: int
    intermediate: int
    parameters: int  # all parameters, for the weights' total

    def mlp(self) -> list[Matrix]:
        """gate_proj, up_proj (intermediate x hidden) and down_proj (hidden x intermediate) per layer."""
        one = [Matrix(self.intermediate, self.hidden), Matrix(self.intermediate, self.hidden),
               Matrix(self.hidden, self.intermediate)]
        return one * self.layers


LLAMA_31_8B = Model("Llama-3.1-8B", layers=32, hidden=4096, intermediate=14336, parameters=8_030_261_248)
SMOLLM2_135M = Model("SmolLM2-135M", layers=30, hidden=576, intermediate=1536, parameters=134_515_008)
MODELS = {"llama-3.1-8b": LLAMA_31_8B, "smollm2-135m": SMOLLM2_135M}


def totals(model: Model, b: int, rank: int, k: int) -> dict[str, int]:
    """Bytes of each stage over all MLP matrices (and the whole model's weights)."""
    mats = model.mlp()
    return {
        "weights (all parameters)": b * model.parameters,
        "MLP weights W": sum(b * w.m * w.n for w in mats),
        "SVF: U, V, σ, z (state)": sum(svf_state_bytes(w, b) for w in mats),
        "SVF: + ∂z, Adam (training)": sum(svf_training_bytes(w, b) for w in mats),
        f"probe: subspace file (k={k})": sum(subspace_bytes(w, k) for w in mats),
        f"LoRA r={rank}: A, B (state)": sum(injection_state_bytes(w, rank, 0) for w in mats),
        f"LoRA r={rank}: training": sum(injection_training_bytes(w, rank, 0) for w in mats),
        f"PALoRA r={rank}, k={k}: state": sum(injection_state_bytes(w, rank, k) for w in mats),
        f"PALoRA r={rank}, k={k}: training": sum(injection_training_bytes(w, rank, k) for w in mats),
    }


def _gb(x: int) -> str:
    return f"{x / 1e9:.3f} GB" if x >= 1e8 else f"{x / 1e6:.2f} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=list(MODELS), default="llama-3.1-8b")
    p.add_argument("--bytes", type=int, default=2, help="bytes per element of the model dtype (2: bf16, 4: float32)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--k", type=int, nargs="+", default=[512, 2048], help="protected components per matrix")
    args = p.parse_args()
    model = MODELS[args.model]
    w = model.mlp()[0]
    print(f"| one {w.m} x {w.n} matrix, {args.bytes}-byte weights | bytes |\n|---|---|")
    print(f"| W | {_gb(args.bytes * w.m * w.n)} |")
    print(f"| SVF state: U, V, σ, z | {_gb(svf_state_bytes(w, args.bytes))} |")
    print(f"| SVF training: + ∂z, Adam | {_gb(svf_training_bytes(w, args.bytes))} |")
    for k in args.k:
        print(f"| probe: subspace file, k={k} | {_gb(subspace_bytes(w, k))} |")
    print(f"| LoRA r={args.rank}: training | {_gb(injection_training_bytes(w, args.rank, 0))} |")
    for k in args.k:
        print(f"| PALoRA r={args.rank}, k={k}: training | {_gb(injection_training_bytes(w, args.rank, k))} |")
    for k in args.k:
        print(f"\n| {model.name}, {len(model.mlp())} MLP matrices, k={k} | total |\n|---|---|")
        for name, value in totals(model, args.bytes, args.rank, k).items():
            print(f"| {name} | {_gb(value)} |")


if __name__ == "__main__":
    main()
