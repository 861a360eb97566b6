"""A method stopped early (issue 19's "LoRA with early stopping"): every snapshot scored on the
validation splits, the step to stop at chosen there by rules fixed beforehand, the chosen steps
scored on test.

    python experiments/early_stop.py runs/es/seed0 runs/es/seed1-lr3e-3:runs/es/seed1 ... \\
        [--method lora] [--reference act-protect-replay] [--json OUT] [--plot OUT.png]

Each ``RUN`` is a run directory whose ``--method`` was injected with ``inject.snapshot_every``
(``methods/<method>/snapshots/step-NNNNNN/``); ``RUN:REF`` names another run directory of the same
seed that holds the ``--reference`` method (default: ``RUN`` itself). Per run:

1. the expert, the reference and every snapshot of the method, plus its last step (the method's own
   adapter), are scored by greedy generation on the validation splits (``data.skill_val``,
   ``data.knowledge_val``, ``data.known_val``; :mod:`validate` for the finished models), kept in
   ``<RUN>/early_stop.json`` (a step already scored is not scored again);
2. the rules pick a step on validation alone:

   * ``matched``: the step whose validation recall is nearest the reference's (the same seed) — the
     method stopped at the protected method's recall;
   * ``tolerant``: the last step whose validation skill is ≥ 95 % of the expert's — a user who
     accepts losing 5 % of the skill stops there (step 0, the expert itself, if no step keeps it);

3. the chosen steps are scored on the test splits (``data.skill_eval``, ``data.knowledge_eval``,
   ``data.known_eval``), against the expert's test row in ``report.json``.

The table gives, per rule, mean ± standard error over the runs (seeds) of the step, skill retention,
new-fact recall and old knowledge (held-out known facts answered / the expert's), beside the
reference's test row; the figure, the validation curves of the three axes against the step (one line
per run, the reference's validation value dashed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from three_axes import GOAL
from validate import validate
from verdict import mean_se, pct

from palora.config import load
from palora.evaluation import evaluate_sets, evaluation_sets
from palora.io.artifacts import RunDir, write_json
from palora.io.models import load_tokenizer
from palora.stages.evaluate import check_run, load_method

TOLERANCE = 0.95  # the `tolerant` rule: skill kept on validation
#: a scored row's numbers (those of validate.py's and report.json's rows)
AXES_KEYS = ("skill_accuracy", "skill_stderr", "knowledge_recall", "knowledge_stderr", "known_recall", "known_stderr")


def score_row(scores: dict) -> dict:
    """:data:`AXES_KEYS` of :func:`palora.evaluation.evaluate_sets`'s scores."""
    s, k, o = scores["skill"], scores["knowledge"], scores["known"]
    return dict(zip(AXES_KEYS, (s.accuracy, s.stderr, k.accuracy, k.stderr, o.accuracy, o.stderr), strict=True))


def pick_matched(curve: list[dict], target: float) -> int:
    """The step whose validation recall is nearest ``target`` (the earlier step on a tie)."""
    return min(curve, key=lambda r: (abs(r["knowledge_recall"] - target), r["step"]))["step"]


def pick_tolerant(curve: list[dict], expert_skill: float, tolerance: float = TOLERANCE) -> int:
    """The last step whose validation skill is ≥ ``tolerance`` of the expert's (else the first step;
    :func:`score_run`'s curves start at step 0, the expert, which always qualifies)."""
    kept = [r["step"] for r in curve if r["skill_accuracy"] >= tolerance * expert_skill]
    return max(kept) if kept else min(r["step"] for r in curve)


def axes(row: dict, expert: dict) -> dict[str, tuple[float, float]]:
    """Retention, recall and old knowledge of ``row`` against ``expert`` (same split), with binomial SEs."""
    e_skill, e_known = expert["skill_accuracy"], expert["known_recall"]
    return {"retention": (row["skill_accuracy"] / e_skill, row["skill_stderr"] / e_skill),
            "recall": (row["knowledge_recall"], row["knowledge_stderr"]),
            "old": (row["known_recall"] / e_known, row["known_stderr"] / e_known)}


def score_run(run: Path, ref: Path, method: str, reference: str, progress: bool) -> dict:
    """Steps 1–3 of the module docstring for one run; the record kept in ``<run>/early_stop.json``."""
    out = run / "early_stop.json"
    state = json.loads(out.read_text()) if out.is_file() else {}
    cfg, rd = load(run / "config.yaml"), RunDir(run)
    steps = rd.snapshot_steps(method)
    if not steps:
        raise SystemExit(f"{run}: {method} has no snapshots (inject it with --set inject.snapshot_every=N)")
    final = {r["name"]: r for r in json.loads(validate(run, progress).read_text())["rows"]}
    ref_val = {r["name"]: r for r in json.loads(validate(ref, progress).read_text())["rows"]}
    if reference not in ref_val:
        raise SystemExit(f"{ref}: no {reference} among its finished methods ({', '.join(ref_val)})")
    if abs(ref_val["expert"]["skill_accuracy"] - final["expert"]["skill_accuracy"]) > 1e-12:
        raise SystemExit(f"{run} and {ref} have different experts: the reference must be of the same seed")
    check_run(cfg, rd, [method])
    tok = load_tokenizer(str(rd.expert_model), trust_remote_code=cfg.model.trust_remote_code)
    curve = {r["step"]: r for r in state.get("curve", [])}
    val_sets = evaluation_sets(cfg, "val", known_val=True)
    for step in steps:
        if step not in curve:
            model = load_method(cfg, rd, method, step)
            curve[step] = {"step": step, **score_row(evaluate_sets(model, tok, val_sets, cfg, desc=f"val step {step}",
                                                                   progress=progress))}
            print(f"{run} {method} step {step}: skill {curve[step]['skill_accuracy']:.3f}, "
                  f"recall {curve[step]['knowledge_recall']:.3f}, known {curve[step]['known_recall']:.3f}")
    curve[cfg.inject.train.steps] = {"step": cfg.inject.train.steps, **{k: final[method][k] for k in AXES_KEYS}}
    curve[0] = {"step": 0, **{k: final["expert"][k] for k in AXES_KEYS}}  # not trained at all: the expert
    rows = sorted(curve.values(), key=lambda r: r["step"])
    chosen = {"matched": pick_matched(rows, ref_val[reference]["knowledge_recall"]),
              "tolerant": pick_tolerant(rows, final["expert"]["skill_accuracy"])}
    test = {int(k): v for k, v in state.get("test", {}).items()}
    expert_test = next(r for r in json.loads((run / "report.json").read_text())["rows"] if r["name"] == "expert")
    test[0] = {k: expert_test[k] for k in AXES_KEYS}
    test_sets = evaluation_sets(cfg)
    for step in sorted(set(chosen.values()) - set(test)):
        model = load_method(cfg, rd, method, None if step == cfg.inject.train.steps else step)
        test[step] = score_row(evaluate_sets(model, tok, test_sets, cfg, desc=f"test step {step}", progress=progress))
    record = {"method": method, "reference": reference, "reference_run": str(ref), "rate": cfg.inject.train.lr,
              "steps": cfg.inject.train.steps, "expert_val": final["expert"], "reference_val": ref_val[reference],
              "curve": rows, "chosen": chosen, "test": {str(k): v for k, v in sorted(test.items())}}
    write_json(out, record)
    return record


def summary(records: list[dict]) -> dict[str, dict]:
    """Per rule, and for the reference: mean ± SE over runs of the step and the three test axes."""
    out: dict[str, dict] = {}
    experts = [{r["name"]: r for r in json.loads((Path(rec["reference_run"]) / "report.json").read_text())["rows"]}
               for rec in records]
    for rule in ("matched", "tolerant"):
        per = [axes(rec["test"][str(rec["chosen"][rule])], e["expert"]) for rec, e in zip(records, experts)]
        steps = [float(rec["chosen"][rule]) for rec in records]
        out[rule] = {"runs": len(per), "step": mean_se(steps, 0.0),
                     "val_recall": mean_se([next(r["knowledge_recall"] for r in rec["curve"]
                                                 if r["step"] == rec["chosen"][rule]) for rec in records], 0.0),
                     **{k: mean_se([p[k][0] for p in per], per[0][k][1]) for k in per[0]}}
    ref_name = records[0]["reference"]
    per = [axes(e[ref_name], e["expert"]) for e in experts]
    out["reference"] = {"runs": len(per), "val_recall": mean_se([rec["reference_val"]["knowledge_recall"]
                                                                 for rec in records], 0.0),
                        **{k: mean_se([p[k][0] for p in per], per[0][k][1]) for k in per[0]}}
    return out


def plot(records: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    panels = (("retention", "skill retention (val, % of the expert)"), ("recall", "new-fact recall (val, %)"),
              ("old", "old knowledge (val, % of the expert's)"))
    for rec, name in zip(records, names):
        xs = [r["step"] for r in rec["curve"]]
        ref = axes(rec["reference_val"], rec["expert_val"])
        for ax, (key, _) in zip(axs, panels):
            line, = ax.plot(xs, [100 * axes(r, rec["expert_val"])[key][0] for r in rec["curve"]], marker=".",
                            label=f"{rec['method']} {name}")
            ax.axhline(100 * ref[key][0], color=line.get_color(), ls="--", lw=0.8)
    for ax, (key, title) in zip(axs, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if key in ("retention", "old"):
            ax.axhline(100 * GOAL[key], color="grey", lw=0.6)
    axs[0].legend(fontsize=7)
    fig.suptitle(f"{records[0]['method']} by step; dashed: {records[0]['reference']} (same seed)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN[:REF]")
    ap.add_argument("--method", default="lora", help="the method injected with snapshots (default: lora)")
    ap.add_argument("--reference", default="act-protect-replay",
                    help="the method whose validation recall `matched` aims at (default: act-protect-replay)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--plot", type=Path, help="the validation curves (PNG)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    pairs = [(Path(a), Path(b or a)) for a, _, b in (s.partition(":") for s in args.runs)]
    records = [score_run(run, ref, args.method, args.reference, not args.quiet) for run, ref in pairs]
    s = summary(records)
    print(f"| {args.method} stopped by | runs | step | val recall % | skill retention % | new-fact recall % | "
          "old knowledge % of the expert's |")
    print("|---|---|---|---|---|---|---|")
    for rule in ("matched", "tolerant"):
        r = s[rule]
        print(f"| {rule} | {r['runs']} | {r['step'][0]:.0f} ± {r['step'][1]:.0f} | {pct(r['val_recall'])} | "
              f"{pct(r['retention'])} | {pct(r['recall'])} | {pct(r['old'])} |")
    r = s["reference"]
    print(f"| ({args.reference}) | {r['runs']} | – | {pct(r['val_recall'])} | {pct(r['retention'])} | "
          f"{pct(r['recall'])} | {pct(r['old'])} |")
    if args.json:
        args.json.write_text(json.dumps({"method": args.method, "reference": args.reference,
                                         "runs": [str(p) for p, _ in pairs], "summary": s}, indent=1))
    if args.plot:
        plot(records, [p.name for p, _ in pairs], args.plot)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
