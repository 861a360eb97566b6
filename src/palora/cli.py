"""The ``palora`` command line: one verb per stage, all sharing one run directory.

Configuration comes through one path (:func:`palora.config.resolve`): defaults, then
``--config FILE.yaml`` (for a stage verb, the run directory's ``config.yaml`` when no file is
given), then ``--set key=value``, then the verb's flags. The resolved configuration is saved as
``<out>/config.yaml``. Errors in the user's input print one line and exit with status 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig, resolve, save
from .errors import PaloraError

#: flag -> (dotted config key, metavar, help)
FLAGS: dict[str, tuple[str, str, str]] = {
    "--model": ("model.name", "M", "local folder, hub id, or packaged model (smollm2-135m-instruct)"),
    "--skill-train": ("data.skill_train", "FILE", "JSONL to train the SVF expert ({text} or {prompt, completion})"),
    "--skill-eval": ("data.skill_eval", "FILE", "JSONL {prompt, answer} measuring the skill"),
    "--knowledge-train": ("data.knowledge_train", "FILE", "JSONL of the facts to inject"),
    "--knowledge-eval": ("data.knowledge_eval", "FILE", "JSONL {prompt, answer} measuring recall"),
    "--out": ("out", "DIR", "run directory (shared by every stage)"),
    "--methods": ("inject.methods", "LIST", "comma-separated injection methods: palora,lora (default), or any of "
                  "palora-in, palora-out, palora-soft, olora-penalty, protect-top, protect-random, act-protect"),
    "--seed": ("seed", "N", "seed of every random choice"),
    "--lm-eval": ("eval.lm_eval_tasks", "TASKS", "comma-separated lm-evaluation-harness tasks also run on every "
                  "model, e.g. gsm8k,arc_challenge (pip install 'palora-llm[eval]')"),
    "--objective": ("svf.objective", "NAME", "SVF expert objective: sft (next-token loss) or reinforce "
                    "(policy gradient with the checker's +1/-1 reward, Transformer²)"),
    "--extra-runs": ("probe.extra_runs", "DIRS", "comma-separated run directories of other SVF experts of the same "
                     "base model, protected together with this run's (probe.combine: union or weighted)"),
    "--probe-data": ("probe.skill_data", "FILES", "comma-separated JSONL files of several skills this run's expert "
                     "was trained on: each probed, the selections united (probe.combine)"),
    "--protect-adapter": ("inject.protect_adapter", "DIR", "an earlier round's adapter for this expert: start from it "
                          "merged and keep the new update off its column and row spaces"),
}

#: (verb, flag) -> what the flag means for that verb, where it differs from FLAGS
VERB_FLAGS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("compare", "--methods"): ("compare.methods", "LIST", "comma-separated methods to compare (default: all): "
                               "svf,lora,pissa,corda-kpm,milora,olora-penalty,palora,palora-in,palora-out,"
                               "palora-soft,protect-top,protect-random,act-protect,full-mlp"),
}


def flag_spec(verb: str, flag: str) -> tuple[str, str, str]:
    """``(dotted config key, metavar, help)`` of ``flag`` for ``verb``."""
    return VERB_FLAGS.get((verb, flag), FLAGS[flag])


VERBS: dict[str, tuple[str, list[str]]] = {
    "data": ("write the demo's data sets as JSONL (reasoning-gym skill splits, fictional biographies, "
             "capitals the model already knows) and a manifest into --out", ["--model", "--out"]),
    "demo": ("the embedded default: demo data, SVF expert, probe, plain LoRA and PALoRA under one budget, "
             "evaluation, report and plots, on the packaged SmolLM2-135M-Instruct (CPU, minutes). Settings: "
             "palora/configs/demo.yaml (--config replaces it, --set adjusts it); --out defaults to runs/demo",
             ["--out", "--seed"]),
    "run": ("every stage: SVF expert, probe, injection with each method, evaluation, report",
            ["--model", "--skill-train", "--skill-eval", "--knowledge-train", "--knowledge-eval", "--out",
             "--methods", "--seed", "--lm-eval"]),
    "svf": ("stage 1: train the SVF expert on the skill data (svf_expert.safetensors, expert_model/)",
            ["--model", "--skill-train", "--out", "--seed", "--objective"]),
    "probe": ("stage 2: pick the protected singular components from the expert (subspace.safetensors)",
              ["--out", "--probe-data", "--extra-runs"]),
    "inject": ("stage 3: inject the facts with each method (methods/<method>/adapter, merged_model)",
               ["--knowledge-train", "--methods", "--out", "--seed", "--protect-adapter"]),
    "eval": ("evaluate base, expert and every injected method (report.json, report.md, plots/)",
             ["--skill-eval", "--knowledge-eval", "--out", "--lm-eval"]),
    "compare": ("every baseline and ablation (lora, pissa, corda-kpm, milora, olora-penalty, palora variants, "
                "protect-top/random, act-protect, full-mlp) on the same SVF experts and budget: learning rate per "
                "method chosen on the validation splits, several seeds, a protected-budget sweep; compare.md, "
                "compare.json, plots/tradeoff.png, plots/budget.png, plots/grid.png (the rates tried). Default: "
                "palora/configs/compare.yaml on the demo's data (--config replaces it); --out defaults to "
                "runs/compare; rerun to continue",
                ["--model", "--out", "--methods"]),
}

SHIPPED_CONFIGS = Path(__file__).parent / "configs"
DEMO_CONFIG = SHIPPED_CONFIGS / "demo.yaml"
COMPARE_CONFIG = SHIPPED_CONFIGS / "compare.yaml"


def config_path(name: str) -> Path:
    """``--config`` value: a YAML file, or the name of a shipped config (``llama-3.1-8b``)."""
    path = Path(name)
    shipped = SHIPPED_CONFIGS / f"{name}.yaml"
    if not path.exists() and path.name == name and shipped.is_file():
        return shipped
    return path

EXAMPLE = """\
example:
  palora run --model smollm2-135m-instruct \\
      --skill-train skill_train.jsonl --skill-eval skill_eval.jsonl \\
      --knowledge-train facts_train.jsonl --knowledge-eval facts_eval.jsonl \\
      --out runs/demo --set svf.train.steps=50 --set probe.fraction=0.5
"""


def config_keys_help(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """One line per configuration key: ``key = default  help``."""
    lines = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            lines += config_keys_help(type(value), f"{prefix}{f.name}.")
        else:
            lines.append(f"  {prefix}{f.name} = {value!r}\n      {f.metadata.get('help', '')}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palora",
        description="PALoRA: inject new facts into a causal LM with LoRA kept orthogonal to the singular "
        "components a reasoning skill relies on (found by an SVF expert).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Stages share one run directory: `palora svf`, `palora probe`, `palora inject`, "
        "`palora eval` can be rerun alone.\n\n" + EXAMPLE,
    )
    parser.add_argument("--version", action="version", version=f"palora {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    keys = "configuration keys (--set key=value, or the same keys in --config FILE.yaml):\n" + "\n".join(
        config_keys_help()
    )
    for verb, (help_text, flags) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text, epilog=EXAMPLE + "\n" + keys,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for flag in flags:
            key, metavar, h = flag_spec(verb, flag)
            p.add_argument(flag, dest=key, metavar=metavar, help=f"{h} [{key}]", type=int if flag == "--seed" else str)
        shipped = ", ".join(sorted(c.stem for c in SHIPPED_CONFIGS.glob("*.yaml")))
        p.add_argument("--config", metavar="FILE",
                       help=f"YAML file with configuration keys, or a shipped config: {shipped}")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one configuration key (repeatable), e.g. --set inject.rank=8")
        p.add_argument("--overwrite", action="store_true",
                       help="when --out holds a run made with other settings, redo the stages they change "
                       "(default: refuse). The same command on the same --out resumes: finished stages are "
                       "skipped, a killed one continues from its last checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _recipe(verb: str) -> Callable[..., Any]:
    # imported lazily so that `palora --help` is fast
    from .recipes import compare, data, demo, evaluate, inject, pipeline, probe, svf

    return {"data": data.run_data, "demo": demo.run_demo, "run": pipeline.run_all, "svf": svf.run_svf,
            "probe": probe.run_probe, "inject": inject.run_inject, "eval": evaluate.run_eval,
            "compare": compare.run_compare}[verb]


def configure(args: argparse.Namespace) -> RunConfig:
    keys = [flag_spec(args.verb, f)[0] for f in VERBS[args.verb][1]]
    flags = {key: getattr(args, key, None) for key in keys}
    config_file = config_path(args.config) if args.config else None
    if args.verb == "compare" and config_file is None:  # the shipped comparison on the demo's data
        from .recipes.compare import DATA_FILES

        config_file = COMPARE_CONFIG
        flags["out"] = flags.get("out") or "runs/compare"
        flags.update({key: str(Path(flags["out"]) / "data" / name) for key, name in DATA_FILES.items()})
    elif args.verb == "compare":
        flags["out"] = flags.get("out") or "runs/compare"
    elif args.verb == "demo":
        from .recipes.demo import DATA_FILES

        config_file = config_file or DEMO_CONFIG
        flags["out"] = flags.get("out") or "runs/demo"
        flags.update({key: str(Path(flags["out"]) / "data" / name) for key, name in DATA_FILES.items()})
    elif config_file is None and args.verb not in ("run", "data", "compare"):
        # a stage verb continues the run found in --out (or the default run directory)
        out = flags.get("out") or RunConfig().out
        existing = Path(out) / "config.yaml"
        config_file = existing if existing.is_file() else None
    return resolve(config_file, args.overrides, flags)


def _quiet_libraries() -> None:
    """Our own progress bars and log lines only: no per-file bars or advice from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _restore(rd: Any, previous: bytes | None) -> None:
    """Put back the ``config.yaml`` a refused command replaced (or remove the one it created)."""
    if previous is None:
        rd.config.unlink(missing_ok=True)
        if rd.root.is_dir() and not any(rd.root.iterdir()):
            rd.root.rmdir()
        return
    tmp = rd.config.with_name(f".{rd.config.name}.restore")
    tmp.write_bytes(previous)
    tmp.replace(rd.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    previous: bytes | None = None  # the run directory's config.yaml before this command
    rd, wrote = None, False
    try:
        cfg = configure(args)
        from .artifacts import RunDir
        from .distributed import barrier, is_main
        from .recipes.run_state import open_run

        rd = RunDir(cfg.out)
        main_process = is_main()
        open_run(rd, cfg, overwrite=args.overwrite, writer=main_process)  # refuses another run's directory
        if main_process:
            previous = rd.config.read_bytes() if rd.config.is_file() else None
            rd.root.mkdir(parents=True, exist_ok=True)
            save(cfg, rd.config)
            wrote = True
        barrier()
        result = _recipe(args.verb)(cfg, rd, progress=not args.quiet)
        if args.verb == "compare" and main_process:
            print((rd.root / "compare.md").read_text(encoding="utf-8"))
            print(f"comparison directory: {rd.root} (compare.md, compare.json, compare.jsonl, plots/)")
        elif args.verb in ("run", "eval", "demo") and main_process:
            from .report import markdown_table, stage_times

            print(markdown_table(result))
            print(stage_times(rd))
            print(f"run directory: {rd.root} (report.md, report.json, plots/)")
        return 0
    except PaloraError as e:
        if wrote:  # a refused command leaves the run directory's config as it was
            _restore(rd, previous)
        if args.debug:
            raise
        print(f"palora {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"palora {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
