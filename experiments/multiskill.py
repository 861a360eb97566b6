"""Two skills protected at once: one SVF expert, its probe on each skill's data and on both.

    python experiments/multiskill.py --skills A_DIR B_DIR --out OUT [--steps 200] [--seed 0]

``A_DIR``, ``B_DIR``: ``palora data`` directories of two skill tasks (``skill_train.jsonl``,
``skill_test.jsonl``, ``manifest.json``); the facts and the known capitals come from ``A_DIR``.

1. One SVF expert (``OUT/expert``, the demo's settings, ``--steps`` steps) on the two skills'
   training lines, shuffled together: a model that has both skills.
2. In a copy of the expert's run directory per variant, ``palora probe --probe-data`` on skill A's
   data, on B's, on both united (``probe.combine=union``: the span of the two selections) and on
   both with one probe's budget split between them (``combine=weighted``); then
   ``palora inject --methods act-protect`` (the demo's method, the activation probe). Plain LoRA (``--methods lora``) is the unprotected reference.
3. Every model (base, expert, each injected one, merged) is evaluated greedily on both skills' test
   splits and on the facts' test questions. Retention of skill X = its accuracy / the expert's.

Everything but the evaluation runs through the CLI, with the demo's settings (chosen on the
validation splits, docs/results.md). Results: ``OUT/results.json`` and a markdown table (± the
binomial standard error of each accuracy) on stdout. Stages already done are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from pathlib import Path

from palora.cli import main
from palora.config import load
from palora.evaluation import evaluate
from palora.io.data import load_eval
from palora.io.models import load_model, load_tokenizer

#: name -> (method, --probe-data skills, extra settings)
VARIANTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "lora": ("lora", (), ()),
    "act-protect, skill A's probe": ("act-protect", ("A",), ()),
    "act-protect, skill B's probe": ("act-protect", ("B",), ()),
    "act-protect, union of both": ("act-protect", ("A", "B"), ("probe.combine=union",)),
    "act-protect, both, one budget": ("act-protect", ("A", "B"), ("probe.combine=weighted",)),
}


def run(argv: list[str]) -> None:
    if main([*argv, "--quiet"]) != 0:
        raise SystemExit(f"failed: palora {' '.join(argv)}")


def mixed_train(a: Path, b: Path, out: Path, seed: int) -> Path:
    lines = [*a.read_text().splitlines(), *b.read_text().splitlines()]
    random.Random(seed).shuffle(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def checker(data: Path) -> str:
    return json.loads((data / "manifest.json").read_text())["skill_task"]["checker"]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def main_(args: argparse.Namespace) -> None:
    a, b, out = Path(args.skills[0]), Path(args.skills[1]), Path(args.out)
    mixed = mixed_train(a / "skill_train.jsonl", b / "skill_train.jsonl", out / "data" / "skill_train_mixed.jsonl",
                        args.seed)
    expert = out / "expert"
    run(["svf", "--config", "demo", "--out", str(expert), "--skill-train", str(mixed), "--seed", str(args.seed),
         "--set", f"svf.train.steps={args.steps}"])
    skill_files = {"A": str(a / "skill_train.jsonl"), "B": str(b / "skill_train.jsonl")}
    models: dict[str, Path | None] = {"base": None, "expert": expert / "expert_model"}
    protected: dict[str, float | None] = {}
    for name, (method, skills, settings) in VARIANTS.items():
        rd = out / slug(name)
        if not rd.exists():
            shutil.copytree(expert, rd, ignore=shutil.ignore_patterns("checkpoints"))
        sets = [x for s in settings for x in ("--set", s)]
        if skills:
            run(["probe", "--out", str(rd), "--methods", method, "--probe-data",
                 ",".join(skill_files[s] for s in skills), *sets])
            protected[name] = json.loads((rd / "stages.json").read_text())["probe:activation"]["protected_fraction"]
        run(["inject", "--out", str(rd), "--methods", method, "--knowledge-train", str(a / "knowledge_train.jsonl"),
             *sets])
        models[name] = rd / "methods" / method / "merged_model"
    cfg = load(expert / "config.yaml")
    sets = {"skill A": (load_eval(str(a / "skill_test.jsonl"), checker(a)), checker(a)),
            "skill B": (load_eval(str(b / "skill_test.jsonl"), checker(b)), checker(b)),
            "recall": (load_eval(str(a / "knowledge_test.jsonl"), cfg.data.knowledge_checker),
                       cfg.data.knowledge_checker)}
    tok = load_tokenizer(str(expert / "expert_model"))
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name, path in models.items():
        if name in results:
            continue
        model = load_model(cfg.model) if path is None else load_model(cfg.model, path=str(path))
        model.eval()
        row = {}
        for key, (examples, check) in sets.items():
            r = evaluate(model, tok, examples, check, chat_template=cfg.data.chat_template,
                         max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size, desc=f"{name}: {key}")
            row[key], row[f"n {key}"] = r.accuracy, r.n
        row["protected share"] = protected.get(name)
        results[name] = row
        results_path.write_text(json.dumps(results, indent=1))
    print(table(results))


def table(results: dict) -> str:
    def pm(p: float, n: int) -> str:
        return f"{100 * p:.1f} ± {100 * math.sqrt(p * (1 - p) / n):.1f}"

    ex = results["expert"]
    lines = ["| model | protected share | skill A % (retention) | skill B % (retention) | new-fact recall % |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        share = "–" if r.get("protected share") is None else f"{r['protected share']:.2f}"
        cells = []
        for key in ("skill A", "skill B"):
            ret = f" ({100 * r[key] / ex[key]:.0f})" if ex[key] > 0 else ""
            cells.append(pm(r[key], r[f"n {key}"]) + ret)
        lines.append(f"| {name} | {share} | {cells[0]} | {cells[1]} | {pm(r['recall'], r['n recall'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", nargs=2, required=True, metavar=("A_DIR", "B_DIR"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=200, help="SVF expert steps on the mixed data")
    parser.add_argument("--seed", type=int, default=0)
    main_(parser.parse_args())
