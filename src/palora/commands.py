"""The verbs of the ``palora`` command, each declared once: what it runs, its flags, its defaults,
its example and what it prints. :mod:`palora.cli` builds the parser and runs them from this table.

A verb's runner is named as ``module:function`` and imported when the verb runs, so that
``palora --help`` imports neither torch nor peft.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import DEFAULT_METHODS, RunConfig
from .methods.registry import FOR_EXPERT, METHODS, PAPER

SHIPPED_CONFIGS = Path(__file__).parent / "configs"

#: flag -> (dotted config key, metavar, help)
FLAGS: dict[str, tuple[str, str, str]] = {
    "--model": ("model.name", "M", "local folder, hub id, or packaged model (smollm2-135m-instruct; "
                "gemma-3-270m with the [gemma] extra)"),
    "--skill-train": ("data.skill_train", "FILE", "JSONL to train the SVF expert ({text} or {prompt, completion})"),
    "--skill-eval": ("data.skill_eval", "FILE", "JSONL {prompt, answer} measuring the skill"),
    "--knowledge-train": ("data.knowledge_train", "FILE", "JSONL of the facts to inject"),
    "--knowledge-eval": ("data.knowledge_eval", "FILE", "JSONL {prompt, answer} measuring recall"),
    "--out": ("out", "DIR", "run directory (shared by every stage)"),
    "--methods": ("inject.methods", "LIST", f"comma-separated injection methods (default: {','.join(DEFAULT_METHODS)}), "
                  f"any of {', '.join(FOR_EXPERT)}; {PAPER} is the paper's"),
    "--seed": ("seed", "N", "seed of every random choice"),
    "--lm-eval": ("eval.lm_eval_tasks", "TASKS", "comma-separated lm-evaluation-harness tasks also run on every "
                  "model, e.g. gsm8k,arc_challenge (needs lm-evaluation-harness: the eval extra)"),
    "--objective": ("svf.objective", "NAME", "SVF expert objective: sft (next-token loss) or reinforce "
                    "(policy gradient with the checker's +1/-1 reward, Transformer²)"),
    "--extra-runs": ("probe.extra_runs", "DIRS", "comma-separated run directories of other SVF experts of the same "
                     "base model, protected together with this run's (probe.combine: union or weighted)"),
    "--probe-data": ("probe.skill_data", "FILES", "comma-separated JSONL files of several skills this run's expert "
                     "was trained on: each probed, the selections united (probe.combine)"),
    "--keep-data": ("probe.keep_data", "FILES", "comma-separated JSONL files of what the model already knows and must "
                    "keep (general text, known facts): act-protect also keeps its update off their input directions"),
    "--protect-adapter": ("inject.protect_adapter", "DIR", "an earlier round's adapter for this expert: start from it "
                          "merged and keep the new update off its column and row spaces"),
}

DATA_FILES = "--skill-train skill_train.jsonl --skill-eval skill_eval.jsonl \\\n      " \
             "--knowledge-train facts_train.jsonl --knowledge-eval facts_eval.jsonl"


def _print_report(result: Any, rd: Any) -> str:
    from .report.tables import markdown_table, stage_times

    return f"{markdown_table(result)}\n{stage_times(rd)}\nrun directory: {rd.root} (report.md, report.json, plots/)"


def _print_comparison(result: Any, rd: Any) -> str:
    return ((rd.root / "compare.md").read_text(encoding="utf-8")
            + f"\ncomparison directory: {rd.root} (compare.md, compare.json, compare.jsonl, plots/)")


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    flags: tuple[str, ...]
    example: str
    runner: str  # "module:function", called as function(cfg, rd, progress=...)
    #: the config sections --help lists (all when empty)
    sections: tuple[str, ...] = ()
    config: str | None = None  # shipped config read when --config is not given
    out: str | None = None  # --out when not given
    #: point the data files into <out>/data/ (the demo's data): always, or only with the shipped config
    demo_data: Literal["always", "with the shipped config"] | None = None
    #: with demo_data: probe.keep_data names the demo's general text and known-fact protect split
    keep_data: bool = False
    continues: bool = False  # a stage verb: without --config, continue the run found in --out
    prints: Callable[[Any, Any], str] | None = None
    #: flags that mean another key for this verb than in FLAGS
    flag_meanings: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    run_dir: bool = True  # False: prints something and writes nothing (palora config)

    @property
    def omits(self) -> tuple[str, ...]:
        """The config sections its ``config.yaml`` leaves out when they hold their defaults: those it
        never reads (loading the file gives them back)."""
        sections = [f.name for f in dataclasses.fields(RunConfig) if f.default_factory is not dataclasses.MISSING]
        return tuple(n for n in sections if self.sections and n not in self.sections)

    def flag(self, flag: str) -> tuple[str, str, str]:
        """``(dotted config key, metavar, help)`` of ``flag`` for this verb."""
        return self.flag_meanings.get(flag, FLAGS[flag])

    def run(self, *args: Any, **kwargs: Any) -> Any:
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module, __package__), function)(*args, **kwargs)


VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("data", "write the demo's data sets as JSONL (reasoning-gym skill splits, fictional biographies, facts "
         "the model already knows split into a protect part and a held-out part, general text it samples itself) "
         "and a manifest into --out", ("--model", "--out"),
         "palora data --out data/", ".stages.data:run_data", sections=("model", "data", "data_gen", "eval")),
    Verb("demo", "the embedded default: demo data, SVF expert, probe, act-protect-replay (LoRA kept off the "
         "skill's, the general text's and the protect split of known facts' input directions, a quarter of its "
         "lines replayed from the last two), evaluation on the three axes (skill, new facts, old facts), report "
         "and plots, on the packaged SmolLM2-135M-Instruct (CPU, about 14 minutes on 2 cores). Settings: "
         "palora/configs/demo.yaml (--config replaces it, --set adjusts it); --out defaults to runs/demo",
         ("--out", "--seed"), "palora demo --out runs/demo --seed 1", ".stages.pipeline:run_demo",
         config="demo", out="runs/demo", demo_data="always", keep_data=True, prints=_print_report,
         sections=("model", "data", "data_gen", "svf", "probe", "inject", "eval", "log")),
    Verb("run", "every stage: SVF expert, probe, injection with each method, evaluation, report",
         ("--model", "--skill-train", "--skill-eval", "--knowledge-train", "--knowledge-eval", "--out", "--methods",
          "--seed", "--lm-eval", "--keep-data"),
         f"palora run --model smollm2-135m-instruct \\\n      {DATA_FILES} \\\n      --out runs/my-run "
         f"--methods act-protect,{PAPER},lora --set svf.train.steps=50",
         ".stages.pipeline:run_all", sections=("model", "data", "svf", "probe", "inject", "eval", "log"),
         prints=_print_report),
    Verb("svf", "stage 1: train the SVF expert on the skill data (svf_expert.safetensors, expert_model/)",
         ("--model", "--skill-train", "--out", "--seed", "--objective"),
         "palora svf --model smollm2-135m-instruct --skill-train skill_train.jsonl --out runs/my-run",
         ".stages.svf:run_svf", sections=("model", "data", "svf", "log"), continues=True),
    Verb("probe", "stage 2: the protected subspaces of the expert, one per basis the methods read (the paper's "
         "singular components: subspace.safetensors; the skill's input covariance: subspace-activation.safetensors)",
         ("--out", "--methods", "--probe-data", "--keep-data", "--extra-runs"),
         f"palora probe --out runs/my-run --methods {PAPER} --set probe.score=fisher --set probe.fraction=0.5",
         ".stages.probe:run_probe", sections=("model", "data", "probe"), continues=True),
    Verb("inject", "stage 3: inject the facts with each method (methods/<method>/adapter, merged_model)",
         ("--knowledge-train", "--methods", "--out", "--seed", "--protect-adapter"),
         "palora inject --out runs/my-run --knowledge-train facts_round2.jsonl "
         "--protect-adapter runs/my-run/methods/act-protect/adapter", ".stages.inject:run_inject",
         sections=("model", "data", "inject", "log"), continues=True),
    Verb("eval", "evaluate base, expert and every injected method (report.json, report.md, plots/)",
         ("--skill-eval", "--knowledge-eval", "--out", "--lm-eval"),
         "palora eval --out runs/my-run --lm-eval arc_easy --set eval.lm_eval_limit=100",
         ".stages.evaluate:run_eval", sections=("model", "data", "eval"), continues=True, prints=_print_report),
    Verb("compare", f"every method ({', '.join(METHODS)}) on the same SVF experts and budget: learning rate per "
         "method chosen on the validation splits, several seeds, a protected-budget sweep; compare.md, "
         "compare.json, plots/tradeoff.png, plots/budget.png, plots/grid.png (the rates tried). Default: "
         "palora/configs/compare.yaml on the demo's data (--config replaces it); --out defaults to runs/compare; "
         "rerun to continue", ("--model", "--out", "--methods"),
         "palora compare --out runs/compare --methods svf,lora,act-protect,palora --set compare.seeds=[0,1]",
         ".compare.run:run_compare", config="compare", out="runs/compare", demo_data="with the shipped config",
         keep_data=True,
         prints=_print_comparison,
         flag_meanings={"--methods": ("compare.methods", "LIST", f"comma-separated methods to compare (default: "
                                      f"all): {','.join(METHODS)}")}),
    Verb("config", "print every configuration key with its value (the defaults, or those of --config and --set), "
         "its help and its allowed values; runs nothing", (), "palora config --config demo --set inject.rank=8",
         ".cli:show_config", run_dir=False),
)}
