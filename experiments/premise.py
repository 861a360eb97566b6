"""E1, the paper's premise without any injection: do the components an SVF expert's scale vector
marks carry the skill?

    python experiments/premise.py --runs R0,R1,R2 --lora R0/methods/lora/adapter \
        --limit 250 --out premise.json

Each run ``R`` holds an SVF expert (``palora svf``, parametrisation ``linear``) whose targets are
``W_z = U diag(σ ⊙ s) Vᵀ``. Per matrix, a selection ``S`` takes the best ``⌈f·r⌉`` components
(f ∈ ``--fractions``) by a score of :mod:`palora.core.probe` (``delta`` |s−1|, ``sigma_delta``
σ|s−1|, ``amplified`` max(s−1, 0), ``damped`` max(1−s, 0), ``fisher`` E[(∂L_skill/∂z)²]), or the
principal ones (``top``: largest σ), or a uniform draw of the same size (``random``, ``--draws``
draws). Skill accuracy is measured by greedy generation on the run's skill test set for

* ``reset``: the expert with ``s_i = 1`` on S (its change undone where S points);
* ``keep``:  the expert with ``s_i = 1`` off S (its change kept on S only);
* ``noise``: the expert plus, per matrix, a random rank-``--noise-rank`` update ``ΔW = B A``
  (Gaussian) with the Frobenius norm of the trained LoRA's update of that matrix (``--lora``,
  times ``--noise-scale``), unconstrained (``noise:none``) or projected off S on both sides,
  ``(I − U_S U_Sᵀ) ΔW (I − V_S V_Sᵀ)``, then rescaled to the same norm (``--noise-draws`` draws,
  S at the first fraction).

The premise "z marks the skill's components" holds for a score only if its S beats a random S of
the same size by more than two standard errors: resetting it costs more skill, keeping it keeps
more, and noise kept off it costs less. The differences are paired per expert (score minus the
mean of the random draws); the standard error is the larger of the one over experts and the
binomial one of the pooled difference. The rule is uncorrected for the thirty-odd comparisons,
and with three experts the SE over experts has two degrees of freedom: read a "yes" near the
line as a lead, not a finding. Writes ``--out`` (the settings and every accuracy; a rerun with
the same settings measures only the experts it lacks), prints the tables and, with ``--plot``, draws them.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from palora.config import resolve
from palora.core.probe import SelectionRule, component_scores, same_budget_indices, select
from palora.core.statistics import fisher_information
from palora.core.svf import SVFLinear, add_svf, effective_scale, load_svf_state
from palora.evaluation import evaluate
from palora.io.artifacts import RunDir, load_svf_expert
from palora.io.data import load_eval
from palora.io.models import load_model, load_model_and_tokenizer
from palora.protection import skill_batches

Z_SCORES = ("delta", "sigma_delta", "amplified", "damped", "fisher")


def lora_norms(cfg, adapter: Path, names: list[str]) -> dict[str, float]:
    """``‖ΔW‖_F`` per target of a trained peft LoRA adapter (``get_delta_weight``: ``B A · α/r``)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(cfg.model), str(adapter))
    inner = model.base_model.model
    return {n: float(inner.get_submodule(n).get_delta_weight("default").float().norm()) for n in names}


def selections(layers: dict[str, SVFLinear], fisher: dict[str, torch.Tensor], fraction: float, draws: int,
               seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Every selection of the module docstring at one fraction: name -> per-matrix indices."""
    scale = {n: effective_scale(layer.z, layer.sigma, "linear").detach() for n, layer in layers.items()}
    rule = SelectionRule("fraction", fraction=fraction)
    out = {score: select({n: component_scores(scale[n], layer.sigma, score, fisher[n])
                          for n, layer in layers.items()}, rule) for score in Z_SCORES}
    counts = {n: int(i.numel()) for n, i in out["delta"].items()}
    ranks = {n: int(layer.sigma.numel()) for n, layer in layers.items()}
    out["top"] = same_budget_indices(counts, ranks, "top", seed)
    for d in range(draws):
        out[f"random{d}"] = same_budget_indices(counts, ranks, "random", 1000 * seed + d)
    return out


@contextmanager
def scales(layers: dict[str, SVFLinear], z: dict[str, torch.Tensor], on: dict[str, torch.Tensor] | None,
           keep_on: bool) -> Iterator[None]:
    """The expert with its scales kept on the indices ``on`` only (``keep_on``) or reset to 1 there."""
    with torch.no_grad():
        for n, layer in layers.items():
            mask = torch.zeros_like(layer.z, dtype=torch.bool)
            if on is not None:
                mask[on[n]] = True
            keep = mask if keep_on else ~mask
            layer.z.copy_(torch.where(keep, z[n], torch.ones_like(z[n])))
    try:
        yield
    finally:
        with torch.no_grad():
            for n, layer in layers.items():
                layer.z.copy_(z[n])


def random_update(layer: SVFLinear, norm: float, rank: int, off: torch.Tensor | None, g: torch.Generator
                  ) -> torch.Tensor:
    """``ΔW`` (m, n) = B A, Gaussian, projected off ``U_S``/``V_S`` when ``off`` is given, norm ``norm``."""
    m, n = layer.U.shape[0], layer.V.shape[0]
    # drawn on the CPU (the generator's), then moved: the same draw on any device
    dw = (torch.randn(m, rank, generator=g) @ torch.randn(rank, n, generator=g)).to(layer.U.device)
    if off is not None:
        u, v = layer.U[:, off].float(), layer.V[:, off].float()
        dw = dw - u @ (u.T @ dw)
        dw = dw - (dw @ v) @ v.T
    return dw * (norm / dw.norm().clamp_min(1e-12))


@contextmanager
def added(layers: dict[str, SVFLinear], updates: dict[str, torch.Tensor]) -> Iterator[None]:
    """Each layer's output plus ``x ΔWᵀ`` (forward hooks, removed after)."""
    def hook(dw):
        return lambda module, inputs, output: output + inputs[0] @ dw.T.to(output.dtype)
    handles = [layers[n].register_forward_hook(hook(dw)) for n, dw in updates.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_expert(run: Path, args, norms_cache: dict) -> dict[str, dict]:
    """Every condition's skill accuracy on one expert: condition -> {accuracy, n, correct}."""
    rd = RunDir(run)
    cfg = resolve(rd.config)
    state, meta = load_svf_expert(rd.svf_expert, None)
    if meta["parametrization"] != "linear":
        raise SystemExit(f"{run}: the expert is {meta['parametrization']}; this experiment sets s = z (linear only)")
    model, tok = load_model_and_tokenizer(cfg.model)
    layers = add_svf(model, "linear", cfg.model.target_modules, progress=False)
    load_svf_state(model, state)
    z = {n: layer.z.detach().clone() for n, layer in layers.items()}
    examples = load_eval(cfg.data.skill_eval, cfg.data.skill_checker)[: args.limit]
    fisher = fisher_information(model, skill_batches(cfg, tok), progress=False)
    if "norms" not in norms_cache:
        norms_cache["norms"] = lora_norms(cfg, args.lora, list(layers))
    norms = {n: v * args.noise_scale for n, v in norms_cache["norms"].items()}

    def score() -> dict:
        r = evaluate(model, tok, examples, cfg.data.skill_checker, chat_template=cfg.data.chat_template,
                     max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size, progress=False)
        return {"accuracy": r.accuracy, "n": r.n, "correct": r.correct}

    plan: list[tuple[str, object]] = [("expert", None), ("base", "base")]
    chosen = {f: selections(layers, fisher, f, args.draws, cfg.seed) for f in args.fractions}
    for f, sels in chosen.items():
        for name, idx in sels.items():
            plan += [(f"reset:{name}@{f}", ("reset", idx)), (f"keep:{name}@{f}", ("keep", idx))]
    f0 = args.fractions[0]
    for d in range(args.noise_draws):
        plan.append((f"noise:none#{d}", ("noise", None, d)))
        for name in args.noise_selections:
            plan.append((f"noise:{name}@{f0}#{d}", ("noise", chosen[f0][name], d)))
    results = {}
    for key, how in tqdm(plan, desc=run.name, unit="condition"):
        if how is None:
            results[key] = score()
        elif how == "base":
            with scales(layers, z, None, keep_on=True):  # kept on nothing: s = 1 everywhere
                results[key] = score()
        elif how[0] in ("reset", "keep"):
            with scales(layers, z, how[1], keep_on=how[0] == "keep"):
                results[key] = score()
        else:
            g = torch.Generator().manual_seed(10_000 * cfg.seed + how[2])
            updates = {n: random_update(layer, norms[n], args.noise_rank, None if how[1] is None else how[1][n], g)
                       for n, layer in layers.items()}
            with added(layers, updates):
                results[key] = score()
    return results


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else math.nan
    return m, se


def accuracies(results: dict[str, dict], prefix: str, suffix: str) -> list[float]:
    """The accuracies of one expert's conditions named ``prefix…suffix`` (the draws of one arm)."""
    return [v["accuracy"] for k, v in results.items() if k.startswith(prefix) and k.endswith(suffix)]


def tables(per_run: dict[str, dict[str, dict]], fractions: list[float], noise_selections: list[str]) -> str:
    """The markdown tables of the module docstring from every run's accuracies."""
    runs = list(per_run)
    n = per_run[runs[0]]["expert"]["n"]

    def acc(run: str, key: str) -> float:
        return per_run[run][key]["accuracy"]

    def draws(run: str, prefix: str, suffix: str) -> list[float]:
        return accuracies(per_run[run], prefix, suffix)

    def cell(xs: list[float]) -> str:
        m, se = mean_se(xs)
        return f"{100 * m:.1f} ± {100 * se:.1f}"

    def verdict(diffs: list[float], cells: list[float], rand: list[float], better: int) -> str:
        m, se_runs = mean_se(diffs)
        p, q = sum(cells) / len(cells), sum(rand) / len(rand)
        # binomial SE of the pooled difference: n questions per run, the random arm a mean of draws
        se_binom = math.sqrt(p * (1 - p) / (n * len(runs)) + q * (1 - q) / (n * len(runs)))
        se = max(se_runs if not math.isnan(se_runs) else 0.0, se_binom)
        beats = better * m > 2 * se
        return f"{100 * m:+.1f} ± {100 * se:.1f}", "**yes**" if beats else "no"

    lines = [f"Skill accuracy (%) on {n} test questions, mean ± SE over {len(runs)} experts; "
             f"expert {cell([acc(r, 'expert') for r in runs])}, base (s = 1) {cell([acc(r, 'base') for r in runs])}.",
             ""]
    for f in fractions:
        lines += [f"S = {100 * f:g} % of each matrix's components:", "",
                  "| S chosen by | reset on S | vs random | beats random | keep only S | vs random | beats random |",
                  "|---|---|---|---|---|---|---|"]
        for name in (*Z_SCORES, "top"):
            row = [name]
            for mode, better in (("reset", -1), ("keep", +1)):
                cells = [acc(r, f"{mode}:{name}@{f}") for r in runs]
                rand = [sum(d) / len(d) for d in (draws(r, f"{mode}:random", f"@{f}") for r in runs)]
                diff, beats = verdict([c - q for c, q in zip(cells, rand)], cells, rand, better)
                row += [cell(cells), diff, beats]
            lines.append("| " + " | ".join(row) + " |")
        rand_reset = [x for r in runs for x in draws(r, "reset:random", f"@{f}")]
        rand_keep = [x for r in runs for x in draws(r, "keep:random", f"@{f}")]
        lines += [f"| random (all draws) | {cell(rand_reset)} | | | {cell(rand_keep)} | | |", ""]
    if noise_selections:
        f0 = fractions[0]
        lines += [f"Expert + random rank-k noise with the trained LoRA's norm per matrix, kept off S "
                  f"(S = {100 * f0:g} %); mean over draws per expert:", "",
                  "| noise kept off | skill accuracy | vs off random S | beats random |", "|---|---|---|---|"]
        free = [sum(d) / len(d) for d in (draws(r, "noise:none#", "") for r in runs)]
        lines.append(f"| nothing (unconstrained) | {cell(free)} | | |")
        rand = [sum(d) / len(d) for d in (draws(r, "noise:random0@", "") for r in runs)]
        for name in noise_selections:
            cells = [sum(d) / len(d) for d in (draws(r, f"noise:{name}@", "") for r in runs)]
            diff, beats = ("", "") if name == "random0" else \
                verdict([c - q for c, q in zip(cells, rand)], cells, rand, +1)
            lines.append(f"| {name} | {cell(cells)} | {diff} | {beats} |")
    return "\n".join(lines)


def plot(per_run: dict[str, dict[str, dict]], fractions: list[float], path: Path) -> None:
    """One panel per fraction: skill accuracy with S reset and with only S kept, per selection
    (mean ± SE over the experts); the dashed line is the expert, the band the random draws' mean ± SE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(per_run)
    names = [*Z_SCORES, "top"]
    fig, axes = plt.subplots(1, len(fractions), figsize=(5.5 * len(fractions), 3.6), sharey=True,
                             layout="constrained", squeeze=False)
    expert = mean_se([per_run[r]["expert"]["accuracy"] for r in runs])[0]
    for ax, f in zip(axes[0], fractions):
        for j, (mode, colour) in enumerate((("reset", "tab:red"), ("keep", "tab:blue"))):
            stats = [mean_se([per_run[r][f"{mode}:{n}@{f}"]["accuracy"] for r in runs]) for n in names]
            xs = [i + (j - 0.5) * 0.38 for i in range(len(names))]
            ax.bar(xs, [100 * m for m, _ in stats], 0.38, yerr=[100 * (0 if math.isnan(e) else e) for _, e in stats],
                   color=colour, alpha=0.8, label=f"{mode} {'on S' if mode == 'reset' else 'only S'}")
            rand = [sum(d) / len(d) for d in (accuracies(per_run[r], f"{mode}:random", f"@{f}") for r in runs)]
            m, se = mean_se(rand)
            se = 0 if math.isnan(se) else se
            ax.axhspan(100 * (m - se), 100 * (m + se), color=colour, alpha=0.15)
            ax.axhline(100 * m, color=colour, lw=0.8, ls=":")
        ax.axhline(100 * expert, color="k", lw=1, ls="--", label="expert")
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(f"S = {100 * f:g} % of each matrix (bands: random S)")
    axes[0][0].set_ylabel("skill accuracy % (test)")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="comma-separated run directories with an SVF expert each")
    ap.add_argument("--lora", type=Path, required=True, help="a trained LoRA adapter whose per-matrix norm the noise takes")
    ap.add_argument("--fractions", default="0.25,0.5")
    ap.add_argument("--draws", type=int, default=3, help="random selections per fraction")
    ap.add_argument("--noise-draws", type=int, default=5)
    ap.add_argument("--noise-rank", type=int, default=16)
    ap.add_argument("--noise-scale", type=float, default=1.0, help="times the LoRA's norm")
    ap.add_argument("--noise-selections", default="delta,sigma_delta,fisher,top,random0",
                    help="the S the noise is kept off (empty: no noise conditions)")
    ap.add_argument("--limit", type=int, default=250, help="skill test questions per condition")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plot", type=Path, help="also draw the reset/keep accuracies as a PNG")
    args = ap.parse_args()
    args.fractions = [float(x) for x in args.fractions.split(",")]
    args.noise_selections = [x for x in args.noise_selections.split(",") if x]
    if not args.noise_selections:
        args.noise_draws = 0
    known = {*Z_SCORES, "top", *(f"random{d}" for d in range(args.draws))}
    if args.noise_selections and ("random0" not in args.noise_selections or not set(args.noise_selections) <= known):
        ap.error(f"--noise-selections: names among {', '.join(sorted(known))}, random0 included (the reference)")
    runs = [Path(r) for r in args.runs.split(",")]
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("runs", "out", "plot")}
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {"settings": settings, "runs": {}}
    if saved.get("settings") != settings:
        ap.error(f"{args.out} holds results measured with other settings ({saved.get('settings')}): use another --out")
    per_run = saved["runs"]
    cache: dict = {}
    for run in runs:
        if str(run) not in per_run:  # a rerun continues with the experts not yet measured
            per_run[str(run)] = run_expert(run, args, cache)
            args.out.write_text(json.dumps(saved))
    measured = {str(r): per_run[str(r)] for r in runs}
    print(tables(measured, args.fractions, args.noise_selections))
    if args.plot:
        plot(measured, args.fractions, args.plot)


if __name__ == "__main__":
    main()
