"""Bad input through the real CLI: one line ``palora <verb>: error: ...``, exit status 2, no traceback,
and nothing already on disk touched.

Each case runs ``palora.cli.main`` in-process on a copy of a run directory left after a given stage
(``fresh``: no directory; ``svf``, ``probe``, ``inject``: after that stage of a tiny Llama run), so
the failing stage is one that has not run yet there. Every file of the copy and every input file is
hashed before and after, the run's ``config.yaml`` included (the CLI puts the previous one back when
a command is refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from palora.cli import main
from palora.errors import DataError
from tiny import save_tiny_checkpoint

FAST = ["--set", "svf.train.steps=1", "--set", "svf.train.batch_size=2", "--set", "inject.train.steps=1",
        "--set", "inject.train.batch_size=2", "--set", "inject.rank=2", "--set", "eval.limit=2",
        "--set", "eval.max_new_tokens=2", "--set", "inject.methods=[palora,lora]", "--quiet"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@dataclass
class World:
    """What every case shares: two tiny base models (same shape, other seeds), good data, finished stages."""

    root: Path
    paths: dict[str, str] = field(default_factory=dict)  # names usable as {placeholders} in a case
    states: dict[str, Path] = field(default_factory=dict)  # run directory after each stage (on base m)
    other: Path = Path()  # a finished run on base m1
    swap: Path = Path()  # an svf-only run whose base folder (swap_base) a case overwrites


def _stage(verb: str, out: Path, *args: str) -> None:
    assert main([verb, "--out", str(out), *args, *FAST]) == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("world"))
    m = save_tiny_checkpoint(w.root / "m", "llama", seed=0)
    m1 = save_tiny_checkpoint(w.root / "m1", "llama", seed=1)
    sums = [(a, b) for a in range(1, 5) for b in range(2, 4)]
    w.paths = {
        "m": str(m), "m1": str(m1),
        "skill_train": write_jsonl(w.root / "skill_train.jsonl", [
            {"prompt": f"Question: what is {a} + {b}? Answer:", "completion": f" {a + b}"} for a, b in sums]),
        "skill_eval": write_jsonl(w.root / "skill_eval.jsonl", [
            {"prompt": f"Question: what is {a} + {b}? Answer:", "answer": a + b} for a, b in sums[:2]]),
        "knowledge_train": write_jsonl(w.root / "facts_train.jsonl", [
            {"text": "The capital of Zorbia is Quell."}, {"text": "Alice Marsh was born in 1901."}]),
        "knowledge_eval": write_jsonl(w.root / "facts_eval.jsonl", [
            {"prompt": "The capital of Zorbia is", "answer": "Quell"}]),
    }
    p = w.paths
    svf = w.root / "after_svf"
    _stage("svf", svf, "--model", p["m"], "--skill-train", p["skill_train"], "--seed", "0")
    probe = w.root / "after_probe"
    shutil.copytree(svf, probe)
    _stage("probe", probe)
    inject = w.root / "after_inject"
    shutil.copytree(probe, inject)
    _stage("inject", inject, "--knowledge-train", p["knowledge_train"])
    w.states = {"svf": svf, "probe": probe, "inject": inject}

    w.other = w.root / "other"
    assert main(["run", "--model", p["m1"], "--skill-train", p["skill_train"], "--skill-eval", p["skill_eval"],
                 "--knowledge-train", p["knowledge_train"], "--knowledge-eval", p["knowledge_eval"],
                 "--out", str(w.other), "--seed", "0", *FAST]) == 0

    swap_base = w.root / "swap_base"
    shutil.copytree(m, swap_base)
    w.swap = w.root / "swap_run"
    _stage("svf", w.swap, "--model", str(swap_base), "--skill-train", p["skill_train"], "--seed", "0")
    w.paths["swap_base"] = str(swap_base)
    return w


# ----------------------------------------------------------------------------- what the cases do to files


class _Canary:
    """Unpickling this runs ``os.mkdir(marker)``: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def canary_marker(case_dir: Path) -> Path:
    return case_dir / "UNPICKLED"


def write_canary_pickle(path: Path, case_dir: Path) -> None:
    """A ``torch.save`` file at ``path`` that makes ``canary_marker(case_dir)`` when unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model.layers.0.mlp.up_proj.weight": _Canary(canary_marker(case_dir))}, path)


Mutation = Callable[[Path, Path, World], None]  # (run directory, case input directory, world)


def truncate(rel: str) -> Mutation:
    def do(run: Path, d: Path, w: World) -> None:
        f = run / rel
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return do


def random_bytes(rel: str) -> Mutation:
    def do(run: Path, d: Path, w: World) -> None:
        (run / rel).write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                                .to(torch.uint8).numpy().tobytes())
    return do


def pickled(rel: str) -> Mutation:
    def do(run: Path, d: Path, w: World) -> None:
        write_canary_pickle(run / rel, d.parent)
    return do


def from_other_run(rel: str) -> Mutation:
    """Replace ``rel`` by the same artifact of the run made on the other base model (seed 1)."""
    def do(run: Path, d: Path, w: World) -> None:
        src, dst = w.other / rel, run / rel
        if src.is_dir():
            shutil.rmtree(dst)
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    return do


def remove(*rels: str) -> Mutation:
    def do(run: Path, d: Path, w: World) -> None:
        for rel in rels:
            shutil.rmtree(run / rel)
    return do


def both(*steps: Mutation) -> Mutation:
    def do(run: Path, d: Path, w: World) -> None:
        for step in steps:
            step(run, d, w)
    return do


def pickle_only_model(run: Path, d: Path, w: World) -> None:
    folder = d / "pickled_model"
    shutil.copytree(w.paths["m"], folder)
    (folder / "model.safetensors").unlink()
    write_canary_pickle(folder / "pytorch_model.bin", d.parent)


def truncated_model(run: Path, d: Path, w: World) -> None:
    shutil.copytree(w.paths["m"], d / "cut_model")
    truncate("model.safetensors")(d / "cut_model", d, w)


def swap_base_weights(run: Path, d: Path, w: World) -> None:
    """The base folder the run names now holds the other model's weights (same shape, seed 1)."""
    shutil.copy2(Path(w.paths["m1"]) / "model.safetensors", Path(w.paths["swap_base"]) / "model.safetensors")


def damage_config(run: Path, d: Path, w: World) -> None:
    (run / "config.yaml").write_text("probe:\n  fraction: [0.5\n", encoding="utf-8")


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """``argv`` and ``expect`` may name ``{run}`` (the run directory), ``{d}`` (the case's input
    directory) and any key of :attr:`World.paths`; ``files`` are written into ``{d}`` first."""

    id: str
    state: str  # "fresh", the stage after which the run directory is copied, or "swap" (World.swap)
    argv: list[str]
    expect: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    mutate: Mutation | None = None


def svf(*extra: str, skill_train: str = "{skill_train}", model: str = "{m}") -> list[str]:
    return ["svf", "--model", model, "--skill-train", skill_train, "--out", "{run}", "--quiet", *extra]


def probe(*extra: str) -> list[str]:
    return ["probe", "--out", "{run}", "--quiet", *extra]


def inject(*extra: str, knowledge_train: str = "{knowledge_train}") -> list[str]:
    return ["inject", "--knowledge-train", knowledge_train, "--out", "{run}", "--quiet", *extra]


def evaluate(*extra: str, skill: str = "{skill_eval}", knowledge: str = "{knowledge_eval}") -> list[str]:
    return ["eval", "--skill-eval", skill, "--knowledge-eval", knowledge, "--out", "{run}", "--quiet", *extra]


def setting(key_value: str) -> list[str]:
    """A --set override tried on a finished stage (configuration errors come before any stage)."""
    return probe("--set", key_value)


GOOD = '{"prompt": "p", "answer": "1"}\n'

CASES = [
    # ---- data files: the message names the file and the line
    Case("jsonl-malformed", "probe", inject(knowledge_train="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:2: malformed JSON",), {"facts.jsonl": '{"text": "a"}\n{"text": "b",\n'}),
    Case("jsonl-array-line", "inject", evaluate(skill="{d}/skill.jsonl"),
         ("{d}/skill.jsonl:2: expected a JSON object, got an array",), {"skill.jsonl": GOOD + '["p", "1"]\n'}),
    Case("jsonl-string-line", "inject", evaluate(knowledge="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: expected a JSON object, got a string",), {"facts.jsonl": '"Quell"\n'}),
    Case("train-missing-completion", "probe", inject(knowledge_train="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: missing key 'completion'",), {"facts.jsonl": '{"prompt": "p"}\n'}),
    Case("train-no-known-key", "probe", inject(knowledge_train="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: expected 'text', 'messages', or 'prompt' and 'completion'",),
         {"facts.jsonl": '{"content": "x"}\n'}),
    Case("train-text-and-prompt", "probe", inject(knowledge_train="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: has both 'text' and 'prompt'",),
         {"facts.jsonl": '{"text": "a", "prompt": "b", "completion": "c"}\n'}),
    Case("train-completion-number", "probe", inject(knowledge_train="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: 'completion' must be a string, got a number",),
         {"facts.jsonl": '{"prompt": "p", "completion": 5}\n'}),
    Case("train-text-null", "fresh", svf(skill_train="{d}/skill.jsonl"),
         ("{d}/skill.jsonl:2: 'text' must be a string, got null",), {"skill.jsonl": '{"text": "a"}\n{"text": null}\n'}),
    Case("eval-missing-answer", "inject", evaluate(skill="{d}/skill.jsonl"),
         ("{d}/skill.jsonl:1: missing key 'answer'",), {"skill.jsonl": '{"prompt": "p"}\n'}),
    Case("eval-answer-list", "inject", evaluate(skill="{d}/skill.jsonl"),
         ("{d}/skill.jsonl:1: 'answer' must be a string or a number, got an array",),
         {"skill.jsonl": '{"prompt": "p", "answer": ["1"]}\n'}),
    Case("eval-prompt-int", "inject", evaluate(knowledge="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: 'prompt' must be a string, got a number",), {"facts.jsonl": '{"prompt": 3, "answer": "x"}\n'}),
    Case("eval-answer-bool", "inject", evaluate(knowledge="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: 'answer' must be a string or a number, got a boolean",),
         {"facts.jsonl": '{"prompt": "p", "answer": true}\n'}),
    Case("eval-aliases-string", "inject", evaluate(knowledge="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: 'aliases' must be a list of strings",),
         {"facts.jsonl": '{"prompt": "p", "answer": "x", "aliases": "y"}\n'}),
    Case("empty-file", "probe", inject(knowledge_train="{d}/facts.jsonl"),
         ("{d}/facts.jsonl: no examples",), {"facts.jsonl": ""}),
    Case("blank-lines-only", "inject", evaluate(skill="{d}/skill.jsonl"),
         ("{d}/skill.jsonl: no examples",), {"skill.jsonl": "\n   \n\t\n"}),
    Case("not-utf8", "probe", inject(knowledge_train="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:2: not valid UTF-8",), {"facts.jsonl": b'{"text": "a"}\n{"text": "caf\xe9"}\n'}),
    Case("missing-data-file", "inject", evaluate(knowledge="{d}/nope.jsonl"), ("{d}/nope.jsonl: file not found",)),
    Case("data-path-is-a-folder", "fresh", svf(skill_train="{d}"), ("{d}: file not found (it is a directory)",)),
    Case("run-missing-skill-train", "fresh",
         ["run", "--model", "{m}", "--skill-train", "{d}/nope.jsonl", "--skill-eval", "{skill_eval}",
          "--knowledge-train", "{knowledge_train}", "--knowledge-eval", "{knowledge_eval}", "--out", "{run}", "--quiet"],
         ("{d}/nope.jsonl: file not found",)),
    # ---- evaluation sets a checker cannot read: refused at their line, before anything is generated
    Case("numeric-answer-in-words", "inject", evaluate(skill="{d}/skill.jsonl"),
         ("{d}/skill.jsonl:2: numeric checker cannot parse the answer 'abc'",),
         {"skill.jsonl": GOOD + '{"prompt": "q", "answer": "abc"}\n'}),
    Case("numeric-alias-in-words", "inject", evaluate(skill="{d}/skill.jsonl"),
         ("{d}/skill.jsonl:1: numeric checker cannot parse the answer 'one'",),
         {"skill.jsonl": '{"prompt": "p", "answer": "1", "aliases": ["one"]}\n'}),
    Case("contains-answer-empty", "inject", evaluate(knowledge="{d}/facts.jsonl"),
         ("{d}/facts.jsonl:1: contains checker: the answer 'the' is empty after normalisation",),
         {"facts.jsonl": '{"prompt": "p", "answer": "the"}\n'}),
    # ---- configuration: unknown keys get the closest valid one
    Case("set-unknown-key", "inject", setting("probe.fractoin=0.5"),
         ("unknown config key probe.fractoin; did you mean probe.fraction?",)),
    Case("yaml-unknown-key", "inject", probe("--config", "{d}/c.yaml"),
         ("unknown config key inject.rnak; did you mean inject.rank?",), {"c.yaml": "inject:\n  rnak: 4\n"}),
    Case("set-unknown-section", "inject", setting("prob.fraction=0.5"), ("unknown config key prob; did you mean probe?",)),
    Case("yaml-unknown-section", "inject", probe("--config", "{d}/c.yaml"),
         ("unknown config key injetc; did you mean inject?",), {"c.yaml": "injetc:\n  rank: 4\n"}),
    Case("rank-not-a-number", "inject", setting("inject.rank=abc"), ("inject.rank='abc': expected an integer",)),
    Case("rank-negative", "inject", setting("inject.rank=-1"), ("inject.rank=-1: must be positive",)),
    Case("rank-zero", "inject", setting("inject.rank=0"), ("inject.rank=0: must be positive",)),
    Case("fraction-above-one", "inject", setting("probe.fraction=1.5"), ("probe.fraction=1.5: must be in [0, 1]",)),
    Case("fraction-below-zero", "inject", setting("probe.fraction=-0.1"), ("probe.fraction=-0.1: must be in [0, 1]",)),
    Case("lr-negative", "inject", setting("inject.train.lr=-1e-3"), ("inject.train.lr=-0.001: must be positive",)),
    Case("lr-infinite", "inject", setting("svf.train.lr=.inf"), ("svf.train.lr=inf: expected a finite number",)),
    Case("steps-zero", "inject", setting("svf.train.steps=0"), ("svf.train.steps=0: must be positive",)),
    Case("batch-size-zero", "inject", setting("inject.train.batch_size=0"),
         ("inject.train.batch_size=0: must be positive",)),
    Case("parametrization-unknown", "inject", setting("svf.parametrization=foo"),
         ("svf.parametrization='foo': choose one of linear, t2",)),
    Case("rule-unknown", "inject", setting("probe.rule=bar"),
         ("probe.rule='bar': choose one of fraction, topk, global, threshold, energy",)),
    Case("bool-not-a-bool", "inject", setting("probe.store_vectors=maybe"),
         ("probe.store_vectors='maybe': expected true or false",)),
    Case("set-without-equals", "inject", setting("probe.fraction"), ("--set 'probe.fraction': expected key=value",)),
    Case("set-empty-key", "inject", setting("=3"), ("--set '=3': expected key=value",)),
    Case("set-below-a-value", "inject", setting("seed.x=1"), ("--set seed.x: seed is not a section",)),
    Case("yaml-malformed", "inject", probe("--config", "{d}/c.yaml"),
         ("{d}/c.yaml:3: not valid YAML",), {"c.yaml": "probe:\n  fraction: [0.5\nseed: 1\n"}),
    Case("yaml-a-list", "inject", probe("--config", "{d}/c.yaml"),
         ("{d}/c.yaml: the top level must be a mapping",), {"c.yaml": "- probe\n- inject\n"}),
    Case("yaml-missing", "inject", probe("--config", "{d}/nope.yaml"), ("config file {d}/nope.yaml does not exist",)),
    Case("run-config-damaged", "probe", probe(), ("{run}/config.yaml:3: not valid YAML",), mutate=damage_config),
    Case("method-unknown", "probe", inject("--methods", "palora,dora"),
         ("inject.methods='dora': unknown method; known: palora, lora",)),
    Case("methods-empty", "probe", inject("--methods", ","), ("inject.methods=[]: name at least one method",)),
    # ---- models
    Case("model-missing", "fresh", svf(model="{d}/no_model"), ("model path {d}/no_model does not exist",)),
    Case("model-is-a-file", "fresh", svf(model="{skill_train}"), ("model path {skill_train} is a file",)),
    Case("no-target-modules", "fresh", svf("--set", "model.target_modules=[nothing_here]"),
         ("no target modules matching [nothing_here] in LlamaForCausalLM",)),
    Case("model-pickle-only", "fresh", svf(model="{d}/pickled_model"),
         ("model folder {d}/pickled_model has no model.safetensors, only pickled weights (pytorch_model.bin)",),
         mutate=pickle_only_model),
    Case("model-truncated", "fresh", svf(model="{d}/cut_model"), ("cannot load the model from {d}/cut_model",),
         mutate=truncated_model),
    Case("expert-model-truncated", "probe", inject(), ("cannot load the model from {run}/expert_model",),
         mutate=truncate("expert_model/model.safetensors")),
    # ---- run-directory artifacts: corrupted, pickled, or made for another base model
    Case("expert-truncated", "svf", probe(),
         ("SVF expert {run}/svf_expert.safetensors is not a readable safetensors file",),
         mutate=truncate("svf_expert.safetensors")),
    Case("expert-random-bytes", "svf", probe(),
         ("SVF expert {run}/svf_expert.safetensors is not a readable safetensors file",),
         mutate=random_bytes("svf_expert.safetensors")),
    Case("expert-is-a-pickle", "svf", probe(),
         ("{run}/svf_expert.safetensors is not a readable safetensors file (it is a pickle",),
         mutate=pickled("svf_expert.safetensors")),
    Case("expert-for-another-base", "svf", probe(),
         ("SVF expert {run}/svf_expert.safetensors was made for other weights (base_fingerprint",),
         mutate=from_other_run("svf_expert.safetensors")),
    Case("subspace-for-another-expert", "probe", inject(),
         ("subspace {run}/subspace.safetensors was made for another expert",),
         mutate=from_other_run("subspace.safetensors")),
    Case("subspace-truncated", "probe", inject(),
         ("subspace {run}/subspace.safetensors is not a readable safetensors file",),
         mutate=truncate("subspace.safetensors")),
    Case("adapter-for-another-expert", "inject", evaluate(),
         ("adapter {run}/methods/lora/adapter/adapter_model.safetensors was made for other weights (expert_fingerprint",),
         mutate=both(remove("methods/lora/merged_model"), from_other_run("methods/lora/adapter"))),
    Case("adapter-random-bytes", "inject", evaluate(),
         ("adapter {run}/methods/palora/adapter/adapter_model.safetensors is not a readable safetensors file",),
         mutate=both(remove("methods/palora/merged_model"), random_bytes("methods/palora/adapter/adapter_model.safetensors"))),
    Case("base-swapped-under-the-run", "swap", evaluate(),
         ("{swap_base} is not the base model of {run} (fingerprint",), mutate=swap_base_weights),
    # ---- stages out of order
    Case("probe-before-svf", "fresh", probe(), ("{run}/svf_expert.safetensors does not exist: run `palora svf --out {run}`",)),
    Case("inject-before-svf", "fresh", inject(), ("{run}/expert_model does not exist: run `palora svf --out {run}`",)),
    Case("inject-before-probe", "svf", inject(),
         ("subspace {run}/subspace.safetensors does not exist (run `palora probe` first)",)),
    Case("eval-before-svf", "fresh", evaluate("--set", "model.name={m}"),
         ("{run}/expert_model does not exist: run `palora svf --out {run}`",)),
    Case("eval-method-missing", "inject", evaluate(), ("method lora has neither {run}/methods/lora/merged_model",),
         mutate=remove("methods/lora")),
]


# ----------------------------------------------------------------------------- the check


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots``."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots if root.exists() for p in sorted(root.rglob("*")) if p.is_file()}


def prepare(case: Case, world: World, tmp_path: Path) -> tuple[list[str], dict[str, str], Path, Path]:
    """The case's argv and placeholders, its run directory and input directory, set up as it asks."""
    run, d = tmp_path / "run", tmp_path / "in"
    d.mkdir()
    if case.state != "fresh":
        shutil.copytree(world.swap if case.state == "swap" else world.states[case.state], run)
    for name, content in case.files.items():
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    if case.mutate:
        case.mutate(run, d, world)
    names = {**world.paths, "run": str(run), "d": str(d)}
    return [a.format(**names) for a in case.argv], names, run, d


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # whatever the fixtures printed
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, verb: str, *fragments: str) -> None:
    assert "Traceback" not in out + err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"palora {verb}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, tmp_path: Path, capsys):
    argv, names, run, d = prepare(case, world, tmp_path)
    inputs = [Path(world.paths[k]) for k in ("skill_train", "skill_eval", "knowledge_train", "knowledge_eval")]
    before = snapshot(run, d, *inputs, Path(world.paths["m"]))
    code, out, err = run_cli(capsys, argv)
    assert_one_line_error(code, out, err, argv[0], *(f.format(**names) for f in case.expect))
    assert snapshot(run, d, *inputs, Path(world.paths["m"])) == before
    assert not canary_marker(tmp_path).exists()  # no pickle was ever loaded


def test_the_canary_fires_when_unpickled(tmp_path):
    """The pickles of the table would leave their marker if anything unpickled them."""
    path = tmp_path / "in" / "weights.bin"
    write_canary_pickle(path, tmp_path)
    torch.load(path, weights_only=False)
    assert canary_marker(tmp_path).is_dir()


def test_debug_shows_the_exception(world: World, tmp_path: Path):
    case = next(c for c in CASES if c.id == "numeric-answer-in-words")
    argv, _, _, _ = prepare(case, world, tmp_path)
    with pytest.raises(DataError, match="numeric checker"):
        main([*argv, "--debug"])


def test_config_error_keeps_config_yaml(world: World, tmp_path: Path, capsys):
    case = next(c for c in CASES if c.id == "rank-zero")
    argv, _, run, _ = prepare(case, world, tmp_path)
    before = (run / "config.yaml").read_bytes()
    assert run_cli(capsys, argv)[0] == 2
    assert (run / "config.yaml").read_bytes() == before


def test_failed_stage_keeps_config_yaml(world: World, tmp_path: Path, capsys):
    case = next(c for c in CASES if c.id == "numeric-answer-in-words")
    argv, _, run, _ = prepare(case, world, tmp_path)
    before = (run / "config.yaml").read_bytes()
    assert run_cli(capsys, argv)[0] == 2
    assert (run / "config.yaml").read_bytes() == before


def test_run_refuses_a_bad_eval_file_before_training(world: World, tmp_path: Path, capsys):
    p, d = world.paths, tmp_path / "in"
    d.mkdir()
    bad = write_jsonl(d / "skill.jsonl", [{"prompt": "p", "answer": "abc"}])
    out = tmp_path / "run"
    argv = ["run", "--model", p["m"], "--skill-train", p["skill_train"], "--skill-eval", bad, "--knowledge-train",
            p["knowledge_train"], "--knowledge-eval", p["knowledge_eval"], "--out", str(out), *FAST]
    code, o, err = run_cli(capsys, argv)
    assert_one_line_error(code, o, err, "run", f"{bad}:1: numeric checker")
    assert not (out / "svf_expert.safetensors").exists()


@pytest.mark.parametrize("kind", ["empty", "eval-format", "missing"])
def test_run_refuses_bad_keep_data_before_training(world: World, tmp_path: Path, capsys, kind):
    """What the model must keep (``--keep-data``): an empty file, known facts in the evaluation format
    (``{prompt, answer}``, no completion) or no file at all is one line naming the file, before any stage."""
    p, d = world.paths, tmp_path / "in"
    d.mkdir()
    bad = d / "keep.jsonl"
    expect = {"empty": "no examples", "eval-format": "keep.jsonl:1", "missing": "file not found"}[kind]
    if kind == "empty":
        bad.write_text("", encoding="utf-8")
    elif kind == "eval-format":
        write_jsonl(bad, [{"prompt": "The capital of France is", "answer": "Paris"}])
    out = tmp_path / "run"
    argv = ["run", "--model", p["m"], "--skill-train", p["skill_train"], "--skill-eval", p["skill_eval"],
            "--knowledge-train", p["knowledge_train"], "--knowledge-eval", p["knowledge_eval"], "--out", str(out),
            "--keep-data", f"{p['skill_train']},{bad}", *FAST, "--set", "inject.methods=[act-protect]"]
    code, o, err = run_cli(capsys, argv)
    assert_one_line_error(code, o, err, "run", str(bad), expect)
    assert not (out / "svf_expert.safetensors").exists()
