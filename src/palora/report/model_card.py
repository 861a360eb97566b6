"""The run directory's ``README.md``: a Hugging Face model card of what was trained, on what.

:func:`model_card` is pure: the configuration, the report's rows, ``stages.json`` and a few facts
the recipe reads from disk (the data files' sizes and hashes, the target matrices) in, markdown
out. The card opens with the Hub's YAML front matter (``library_name: peft``, ``base_model`` when
the base is a hub checkpoint, ``tags``) and then states the base model, the data, the SVF expert
``W_z = U diag(σ ⊙ s(z)) Vᵀ``, the protected subspace, the injection
``ΔW = (α/r) P_out B A P_in``, the headline table and certificate of ``report.md``, how to load
the artifacts with plain transformers and peft, and the command that reproduces the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from .. import __version__
from ..config import RunConfig
from ..io.models import PACKAGED_MODELS
from ..methods.registry import METHODS
from .tables import certificates, markdown_table, table_legend

#: what each data file of ``cfg.data`` is for, in the card's order
DATA_ROLES = {
    "skill_train": "skill, training (SVF expert)",
    "knowledge_train": "facts, training (injection)",
    "skill_eval": "skill, evaluation",
    "knowledge_eval": "facts, evaluation",
    "known_eval": "known facts, evaluation",
}

PARAMETRIZATIONS = {"linear": "s = z", "t2": "s = sigmoid(z) · Σσ / Σ(σ ⊙ sigmoid(z)) (Transformer²)"}


@dataclass(frozen=True)
class DataFile:
    """One data file as the run read it."""

    key: str  # the ``data.*`` key, e.g. ``skill_train``
    path: str
    lines: int  # non-blank lines: one example each
    sha256: str


def model_card(cfg: RunConfig, rows: list[dict[str, Any]], stages: dict[str, Any], data: list[DataFile],
               targets: list[str], base_model_id: str | None) -> str:
    """The card's markdown. ``targets``: the adapted matrices' names; ``base_model_id``: the hub id
    of the base model (:func:`palora.io.models.hub_id`), ``None`` for a local folder."""
    methods = [m for m in cfg.inject.methods if f"inject:{m}" in stages]
    parts = [_front_matter(base_model_id), _title(cfg, methods), _base(cfg, stages, base_model_id),
             _data(data), _expert(cfg, stages, targets)]
    parts += [_subspace(info) for key, info in stages.items() if key.partition(":")[0] == "probe"]
    parts += [_injection(cfg, stages, methods), _results(cfg, rows, stages), _loading(cfg, methods),
              _reproduce(cfg, stages)]
    return "\n".join(parts)


def _front_matter(base_model_id: str | None, tags: tuple[str, ...] = ("palora", "lora", "svf")) -> str:
    meta: dict[str, Any] = {"library_name": "peft"}
    if base_model_id:
        meta["base_model"] = base_model_id
    meta.update(pipeline_tag="text-generation", tags=list(tags))
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _title(cfg: RunConfig, methods: list[str]) -> str:
    base = cfg.model.name.rstrip("/").rpartition("/")[2]
    return (f"# {base} + SVF expert + knowledge injection ({', '.join(methods)})\n\n"
            f"Written by palora {__version__}. An SVF expert of `{cfg.model.name}` was trained on a reasoning "
            "skill; new facts were then injected into it with each method under one budget, each keeping its LoRA "
            "update off what it protects (below).\n")


def _base(cfg: RunConfig, stages: dict[str, Any], base_model_id: str | None) -> str:
    name = cfg.model.name
    if name in PACKAGED_MODELS:
        p = PACKAGED_MODELS[name]
        kind = f"packaged: `{p.filename}` of the pip package `{p.package}`, de-quantised to fp32"
        kind += f" (quantised from `{base_model_id}`)" if base_model_id else ""
        kind += f"; licence: {p.licence}"
    else:
        kind = "hub checkpoint" if base_model_id else "local folder"
    svf = stages.get("svf", {})
    return (f"## Base model\n\n- `{name}` ({kind}), loaded in {cfg.model.dtype}\n"
            f"- fingerprint of its target matrices: `{svf.get('base_fingerprint', 'n/a')}`; "
            f"of the expert's: `{svf.get('expert_fingerprint', 'n/a')}`\n")


def _data(data: list[DataFile]) -> str:
    lines = ["## Data\n", "| role | file | lines | sha256 |", "|---|---|---|---|"]
    lines += [f"| {DATA_ROLES[f.key]} | `{f.path}` | {f.lines} | `{f.sha256}` |" for f in data]
    return "\n".join(lines) + "\n"


def _budget(t) -> str:
    """A TrainConfig in one phrase."""
    return (f"{t.steps} steps, lr {t.lr:g} ({t.schedule}, warm-up {t.warmup_ratio:g}), "
            f"batch {t.batch_size} × {t.grad_accum} accumulation, grad-norm clip {t.max_grad_norm:g}")


def _expert(cfg: RunConfig, stages: dict[str, Any], targets: list[str]) -> str:
    kinds = list(dict.fromkeys(t.rpartition(".")[2] for t in targets))
    svf = stages.get("svf", {})
    return (f"## SVF expert (stage 1)\n\n`W_z = U diag(σ ⊙ s(z)) Vᵀ`, one learned vector `z` per target matrix.\n\n"
            f"- targets: {len(targets)} matrices ({', '.join(f'`{k}`' for k in kinds)})\n"
            f"- parametrization: `{cfg.svf.parametrization}`, {PARAMETRIZATIONS[cfg.svf.parametrization]}\n"
            f"- training: {_budget(cfg.svf.train)}; {svf.get('trainable_parameters', 0):,} trainable numbers, "
            f"final loss {svf.get('final_loss', float('nan')):.4f}\n")


def _subspace(probe: dict[str, Any]) -> str:
    top = probe.get("in_top_block")
    where = "" if top is None else f"; {100 * top:.1f} % of them in the top-k block of the spectrum"
    return (f"## Protected subspace (stage 2)\n\n- basis `{probe['basis']}`, score `{probe['score']}`, "
            f"rule `{probe['rule']}`\n- protected: {probe['protected']:,} components, "
            f"{100 * probe['protected_fraction']:.1f} % of all{where}\n")


def _injection(cfg: RunConfig, stages: dict[str, Any], methods: list[str]) -> str:
    i = cfg.inject
    soft = ", soft projector" if i.soft else ""
    intro = (f"Every method starts from the expert, with rank {i.rank}, alpha {i.alpha:g}, dropout {i.dropout:g} "
             f"and {_budget(i.train)} (projection side `{i.side}` where the method does not fix it{soft}):\n\n"
             + "".join(f"- `{m}`: {METHODS[m].summary}\n" for m in methods))
    lines = ["## Knowledge injection (stage 3)\n", intro,
             "| method | rank | alpha | steps | lr | batch | trainable params | final loss |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        s = stages[f"inject:{m}"]
        lines.append(f"| {m} | {i.rank} | {i.alpha:g} | {i.train.steps} | {i.train.lr:g} | "
                     f"{i.train.batch_size} × {i.train.grad_accum} | {s.get('trainable_parameters', 0):,} | "
                     f"{s.get('final_loss', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


def _results(cfg: RunConfig, rows: list[dict[str, Any]], stages: dict[str, Any]) -> str:
    return ("## Results\n\nAs in `report.md` (`report.json` holds every number). "
            + table_legend(rows, cfg.seed) + "\n" + markdown_table(rows) + "".join(certificates(stages)))


def _loading(cfg: RunConfig, methods: list[str]) -> str:
    first = "palora" if "palora" in methods else (methods[0] if methods else None)
    code = ["from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"run = {json.dumps(cfg.out)}  # this directory",
            'tokenizer = AutoTokenizer.from_pretrained(f"{run}/expert_model")',
            'expert = AutoModelForCausalLM.from_pretrained(f"{run}/expert_model")  # the SVF expert, merged']
    if first is not None:
        code.append(f'model = PeftModel.from_pretrained(expert, f"{{run}}/methods/{first}/adapter")  # + the facts')
        others = [f"methods/{m}/adapter" for m in methods if m != first]
        if others:
            code.append(f"# the other methods' adapters, each for a fresh expert: {', '.join(others)}")
        if cfg.save_merged:
            code.append(f'merged = AutoModelForCausalLM.from_pretrained(f"{{run}}/methods/{first}/merged_model")'
                        "  # the same, one checkpoint")
    return ("## Loading\n\nThe expert is a stock transformers checkpoint and each adapter a standard peft LoRA "
            "adapter for it (PALoRA's A and B already carry the projection):\n\n```python\n"
            + "\n".join(code) + "\n```\n")


def _reproduce(cfg: RunConfig, stages: dict[str, Any]) -> str:
    verb = "demo" if "data" in stages else "run"  # the demo also wrote its data sets
    return ("## Reproducing\n\n`config.yaml` holds every setting of the run. From the directory the run was "
            "started in (relative paths in it are relative to that directory):\n\n"
            f"```bash\npalora {verb} --config {cfg.out}/config.yaml --out {cfg.out}-again\n```\n")


def adapter_card(cfg: RunConfig, method: str, info: dict[str, Any], stages: dict[str, Any], facts: DataFile | None,
                 adapter: str, expert: str, base_model_id: str | None) -> str:
    """``methods/<method>/adapter/README.md`` (instead of peft's empty template): what the adapter is
    for (the expert at ``expert``, an absolute path), the method and what it protected, its certificate,
    the facts it learnt (by sha256), its budget, and how to load it. ``info``: its inject stage's record."""
    m, i = METHODS[method], cfg.inject
    svf = stages.get("svf", {})
    basis = m.probe_basis
    probe = stages.get("probe" if basis == "singular" else f"probe:{basis}") if basis else None
    if probe is None:
        protected = "nothing (plain LoRA on the expert)" if m.protects is None else f"`{m.protects}` components"
    else:
        protected = (f"`{m.protects}`: {probe['protected']:,} components of the `{probe['basis']}` probe "
                     f"(score `{probe['score']}`, rule `{probe['rule']}`)")
    if "certificate_out" in info:
        side = "both" if info.get("protect_adapter") else (m.side or i.side)  # an earlier round: both sides
        certificate = (f"max over the target matrices ‖U_Sᵀ ΔW‖/‖ΔW‖ = {info['certificate_out']:.2e}, "
                       f"‖ΔW V_S‖/‖ΔW‖ = {info['certificate_in']:.2e} (projection side `{side}`)")
    else:
        certificate = "none (the update is not projected)"
    data = "n/a" if facts is None else f"`{facts.path}` ({facts.lines} lines, sha256 `{facts.sha256}`)"
    return "\n".join([
        _front_matter(base_model_id, tuple(dict.fromkeys(("palora", "lora", method)))),
        f"# `{method}` adapter: new facts for an SVF expert of `{cfg.model.name}`\n",
        f"Written by palora {__version__}: a plain peft LoRA adapter for the SVF expert `{expert}` (the base model "
        f"with its singular values rescaled on a skill; `base_model` above is that base), named by its absolute "
        f"path: it loads from any directory while the run directory stays where it is, and moved or pushed "
        f"elsewhere, with `PeftModel.from_pretrained(expert, adapter)` on the expert loaded by hand.\n",
        f"- method `{method}`: {m.summary}",
        f"- base model `{cfg.model.name}`, target fingerprint `{svf.get('base_fingerprint', 'n/a')}`; expert "
        f"`{svf.get('expert_fingerprint', 'n/a')}` (the adapter's safetensors header carries both)",
        f"- protected: {protected}",
        f"- certificate: {certificate}",
        f"- facts: {data}",
        f"- training: rank {i.rank}, alpha {i.alpha:g}, {_budget(i.train)}; "
        f"{info.get('trainable_parameters', 0):,} trainable parameters, final loss {info.get('final_loss', float('nan')):.4f}\n",
        "## Loading\n\n```python\nfrom peft import AutoPeftModelForCausalLM\n\n"
        f"model = AutoPeftModelForCausalLM.from_pretrained({adapter!r})  # loads the expert it names\n```\n",
    ])
