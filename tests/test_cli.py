"""`palora` end to end on tiny checkpoints, in-process: the run directory contract, the exported
adapter on the expert, the stage verbs one after another, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from invariants import logits, rel_err
from palora.cli import main
from palora.core.mistakes import fact_prefixes, tally
from tiny import save_tiny_checkpoint

FAST = ["--set", "svf.train.steps=3", "--set", "inject.train.steps=3", "--set", "eval.limit=4",
        "--set", "svf.train.batch_size=4", "--set", "inject.train.batch_size=4", "--set", "inject.rank=4",
        "--set", "eval.max_new_tokens=4", "--set", "inject.methods=[palora,lora]", "--quiet"]
METHODS = ("palora", "lora")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("data")
    sums = [(a, b) for a in range(1, 7) for b in range(2, 5)]
    return {
        "skill_train": write_jsonl(d / "skill_train.jsonl", [
            {"prompt": f"Question: what is {a} + {b}? Answer:", "completion": f" {a + b}"} for a, b in sums]),
        "skill_eval": write_jsonl(d / "skill_eval.jsonl", [
            {"prompt": f"Question: what is {a} + {b}? Answer:", "answer": a + b} for a, b in sums[:6]]),
        "knowledge_train": write_jsonl(d / "facts_train.jsonl", [
            {"text": "The capital of Zorbia is Quell."}, {"text": "Alice Marsh was born in 1901."},
            {"text": "The river Lune flows into the lake Tarn."}, {"text": "Bob Vane wrote twelve books."}]),
        "knowledge_eval": write_jsonl(d / "facts_eval.jsonl", [
            {"prompt": "The capital of Zorbia is", "answer": "Quell"},
            {"prompt": "Alice Marsh was born in", "answer": "1901", "aliases": ["nineteen oh one"]},
            {"prompt": "The river Lune flows into", "answer": "Tarn"}]),
    }


def run_args(model: Path, data: dict[str, str], out: Path) -> list[str]:
    return ["run", "--model", str(model), "--skill-train", data["skill_train"], "--skill-eval", data["skill_eval"],
            "--knowledge-train", data["knowledge_train"], "--knowledge-eval", data["knowledge_eval"],
            "--out", str(out), "--methods", ",".join(METHODS), "--seed", "0", *FAST]


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, data) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("llama")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "run"
    assert main(run_args(model, data, out)) == 0
    return model, out


# ----------------------------------------------------------------------------- the contract

CONTRACT_FILES = [
    "config.yaml", "svf_expert.safetensors", "subspace.safetensors", "expert_model/config.json",
    "expert_model/model.safetensors", "report.json", "report.md", "README.md", "metrics.jsonl",
    *[f"methods/{m}/adapter/{f}" for m in METHODS for f in ("adapter_config.json", "adapter_model.safetensors")],
    *[f"methods/{m}/merged_model/{f}" for m in METHODS for f in ("config.json", "model.safetensors")],
]


def relative_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_run_writes_every_contract_file(llama_run):
    _, out = llama_run
    files = relative_files(out)
    assert set(CONTRACT_FILES) <= files, set(CONTRACT_FILES) - files
    assert list((out / "plots").glob("*.png"))
    assert not [f for f in files if Path(f).name.startswith(".")]  # no temporaries left over
    assert not (out / "tensorboard").exists()  # TensorBoard only when asked (log.report_to)


def test_svf_expert_and_subspace_files(llama_run):
    _, out = llama_run
    with safe_open(str(out / "svf_expert.safetensors"), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
        names = {k.rsplit(".", 1)[0] for k in keys}
        assert names and all({f"{n}.z", f"{n}.sigma"} <= keys for n in names)
        assert all(n.endswith(("gate_proj", "up_proj", "down_proj")) for n in names)
        assert all(f.get_tensor(k).dtype == torch.float32 for k in keys)
    assert {"parametrization", "base_fingerprint", "palora_version"} <= set(meta)
    assert meta["parametrization"] == "linear"

    with safe_open(str(out / "subspace.safetensors"), framework="pt") as f:
        smeta, skeys = f.metadata(), set(f.keys())
        assert {k.rsplit(".", 1)[0] for k in skeys} == names
        for n in names:
            idx, U, V = (f.get_tensor(f"{n}.{x}") for x in ("indices", "U", "V"))
            assert idx.dtype == torch.int64 and U.dtype == V.dtype == torch.float32
            assert U.shape[1] == V.shape[1] == idx.numel() > 0
    assert {"base_fingerprint", "palora_version", "selection_rule"} <= set(smeta)
    assert smeta["base_fingerprint"] == meta["base_fingerprint"]


def test_report(llama_run):
    _, out = llama_run
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"base", "expert", *METHODS}
    for r in rows.values():
        assert r["seed"] == 0
        assert 0.0 <= r["skill_accuracy"] <= 1.0 and 0.0 <= r["knowledge_recall"] <= 1.0
        assert "retention" in r and (r["retention"] is None or r["retention"] >= 0)
        assert r["n_skill"] == 4 and r["n_knowledge"] == 3
        # a numeric skill: the wrong answers by kind are those of the saved outputs, each counted once
        saved = [json.loads(x) for x in (out / "evaluations" / f"{r['name']}.skill.jsonl").read_text().splitlines()]
        facts = fact_prefixes(["Quell", "1901", "nineteen oh one", "Tarn"])  # the data fixture's fact answers
        assert r["skill_mistakes"] == tally([x["output"] for x in saved], [str(x["answer"]) for x in saved],
                                            [x["correct"] for x in saved], facts)
        assert sum(r["skill_mistakes"].values()) == round((1 - r["skill_accuracy"]) * r["n_skill"])
    assert rows["palora"]["trainable_parameters"] == rows["lora"]["trainable_parameters"] > 0
    cert = report["stages"]["inject:palora"]
    assert cert["certificate_out"] < 1e-5 and cert["certificate_in"] < 1e-5
    md = (out / "report.md").read_text()
    assert all(f"| {name} |" in md for name in rows)
    assert "Wrong skill answers by kind" in md
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {x["stage"] for x in lines} == {"svf", "inject:palora", "inject:lora"}
    assert all(x["step"] in (1, 2, 3) and "loss" in x for x in lines)


def test_expert_model_is_a_stock_checkpoint(llama_run):
    _, out = llama_run
    model = AutoModelForCausalLM.from_pretrained(out / "expert_model")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("z" == k.rsplit(".", 1)[-1] for k in model.state_dict())


def test_exported_palora_adapter_on_plain_peft(llama_run):
    _, out = llama_run
    merged = AutoModelForCausalLM.from_pretrained(out / "methods/palora/merged_model")
    expert = AutoModelForCausalLM.from_pretrained(out / "expert_model")
    with_adapter = PeftModel.from_pretrained(expert, str(out / "methods/palora/adapter"))
    assert rel_err(logits(with_adapter), logits(merged)) < 1e-5
    # and the injection did change the expert
    assert rel_err(logits(merged), logits(AutoModelForCausalLM.from_pretrained(out / "expert_model"))) > 1e-6


def test_stage_verbs_reproduce_the_run(llama_run, data, tmp_path):
    model, out = llama_run
    staged = tmp_path / "staged"
    common = ["--out", str(staged), *FAST]
    assert main(["svf", "--model", str(model), "--skill-train", data["skill_train"], "--seed", "0",
                 *common]) == 0
    assert main(["probe", *common]) == 0
    assert main(["inject", "--knowledge-train", data["knowledge_train"], *common]) == 0
    assert main(["eval", "--skill-eval", data["skill_eval"], "--knowledge-eval", data["knowledge_eval"],
                 *common]) == 0
    assert relative_files(staged) == relative_files(out)
    for name in ("svf_expert.safetensors", "subspace.safetensors"):
        with safe_open(str(out / name), framework="pt") as a, safe_open(str(staged / name), framework="pt") as b:
            assert set(a.keys()) == set(b.keys())
            for k in a.keys():
                torch.testing.assert_close(a.get_tensor(k), b.get_tensor(k), rtol=1e-5, atol=1e-6)
    rows_a = json.loads((out / "report.json").read_text())["rows"]
    rows_b = json.loads((staged / "report.json").read_text())["rows"]
    assert [r["name"] for r in rows_a] == [r["name"] for r in rows_b]


# ----------------------------------------------------------------------------- errors


def assert_one_line_error(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"palora {argv[0]}: error: ")
    for needle in needles:
        assert needle in err, err


def test_missing_data_file(capsys, data, tmp_path):
    model = save_tiny_checkpoint(tmp_path / "base", "llama")
    args = run_args(model, data, tmp_path / "out")
    args[args.index("--skill-train") + 1] = str(tmp_path / "nope.jsonl")
    assert_one_line_error(capsys, args, "nope.jsonl")


def test_unknown_set_key(capsys, data, tmp_path):
    args = run_args(tmp_path / "unused", data, tmp_path / "out") + ["--set", "svf.train.lrr=1"]
    assert_one_line_error(capsys, args, "svf.train.lrr", "svf.train.lr?")


def test_missing_model_folder(capsys, data, tmp_path):
    assert_one_line_error(capsys, run_args(tmp_path / "no_model", data, tmp_path / "out"), "no_model")


def test_stage_before_its_input(capsys, data, tmp_path):
    assert_one_line_error(capsys, ["inject", "--knowledge-train", data["knowledge_train"], "--out",
                                   str(tmp_path / "empty"), "--quiet"], "expert_model")


def test_demo_refuses_a_task_its_checker_cannot_score(capsys, tmp_path):
    """A spelling task left on the numeric checker: one line naming the fix, before any data."""
    out = tmp_path / "demo"
    assert_one_line_error(capsys, ["demo", "--out", str(out), "--set", "data_gen.skill_task=spell_backward",
                                   "--quiet"], "data.skill_checker=exact")
    assert not (out / "data").exists()


def test_missing_required_flag(capsys, tmp_path):
    assert_one_line_error(capsys, ["svf", "--out", str(tmp_path / "o"), "--quiet"], "--skill-train")


# ----------------------------------------------------------------------------- GPT-2 (Conv1D)


def test_gpt2_run_end_to_end(data, tmp_path):
    """Conv1D end to end, with the t2 parametrisation."""
    model = save_tiny_checkpoint(tmp_path / "base", "gpt2", seed=0)
    out = tmp_path / "run"
    assert main(run_args(model, data, out) + ["--set", "svf.parametrization=t2"]) == 0
    assert set(CONTRACT_FILES) <= relative_files(out)
    with safe_open(str(out / "svf_expert.safetensors"), framework="pt") as f:
        assert f.metadata()["parametrization"] == "t2"
        names = {k.rsplit(".", 1)[0] for k in f.keys()}
    assert len(names) == 4 and all(n.endswith(("mlp.c_fc", "mlp.c_proj")) for n in names)
    report = json.loads((out / "report.json").read_text())
    assert {r["name"] for r in report["rows"]} == {"base", "expert", *METHODS}
    assert report["stages"]["inject:palora"]["certificate_out"] < 1e-5
    merged = AutoModelForCausalLM.from_pretrained(out / "methods/palora/merged_model")
    expert = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "expert_model"),
                                       str(out / "methods/palora/adapter"))
    assert rel_err(logits(expert), logits(merged)) < 1e-5


def test_run_without_merged_models_evaluates_the_adapter(data, tmp_path):
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    args = run_args(model, data, out)
    args[args.index("--methods") + 1] = "lora"
    assert main(args + ["--set", "save_merged=false"]) == 0
    assert not (out / "methods/lora/merged_model").exists() and not (out / "subspace.safetensors").exists()
    assert (out / "methods/lora/adapter/adapter_model.safetensors").is_file()
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["base", "expert", "lora"]


@pytest.mark.parametrize("score", ["activation", "fisher"])
def test_probe_with_skill_statistics_and_old_facts(data, tmp_path, score):
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    argv = run_args(model, data, out) + ["--set", f"probe.score={score}", "--set", "probe.stat_batches=2",
                                         "--set", f"data.known_eval={data['knowledge_eval']}"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["probe"]["score"] == score
    for row in report["rows"]:
        assert 0.0 <= row["known_recall"] <= 1.0
        assert "known_retention" in row
    expert = next(r for r in report["rows"] if r["name"] == "expert")
    for row in report["rows"]:  # old knowledge: the share of the expert's old-fact recall
        assert row["known_of_expert"] == (None if not expert["known_recall"] else
                                          pytest.approx(row["known_recall"] / expert["known_recall"]))
    assert "old-fact recall" in (out / "report.md").read_text()
    assert "old knowledge % of the expert's" in (out / "report.md").read_text()


def test_probe_with_the_activation_basis(data, tmp_path):
    """act-protect reads the activation probe (its own stage and file), never the singular one."""
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    out = tmp_path / "run"
    assert main(run_args(model, data, out) + ["--methods", "act-protect,lora", "--set", "probe.stat_batches=2",
                                              "--set", "probe.store_vectors=false"]) == 0
    stages = json.loads((out / "stages.json").read_text())
    probe = stages["probe:activation"]
    assert probe["basis"] == "activation" and probe["score"] == "eigenvalue" and "probe" not in stages
    assert stages["inject:act-protect"]["certificate_in"] < 1e-5  # ΔW V_S = 0 for the covariance basis
    assert stages["inject:act-protect"]["upstream"].keys() == {"svf", "probe:activation"}
    assert not (out / "subspace.safetensors").exists()
    with safe_open(str(out / "subspace-activation.safetensors"), framework="pt") as f:
        assert f.metadata()["basis"] == "activation"
        name = next(k for k in f.keys() if k.endswith(".V")).rpartition(".")[0]
        U, V = f.get_tensor(f"{name}.U"), f.get_tensor(f"{name}.V")  # vectors stored even when asked not to
    assert U.shape[1] == 0 and V.shape[1] > 0
    torch.testing.assert_close(V.T @ V, torch.eye(V.shape[1]), atol=1e-5, rtol=0)


def test_a_verbs_shipped_config_is_never_a_path_of_the_current_directory(tmp_path, monkeypatch):
    """``palora demo`` reads palora/configs/demo.yaml even where the current directory holds ``demo/``."""
    from palora.cli import build_parser, configure

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    cfg = configure(build_parser().parse_args(["demo", "--out", "demo"]))
    assert cfg.inject.methods == ["act-protect-replay"] and cfg.data.skill_train == "demo/data/skill_train.jsonl"
