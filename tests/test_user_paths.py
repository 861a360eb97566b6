"""What a new user hit (the issue on installing, inputs, outputs, the terminal), each case as a test:
bad inputs refused before the first stage, one command per run directory, outputs that load from
anywhere and say what they are, a quiet console, a --help that teaches, and the README's snippet."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from palora.cli import main
from test_cli import FAST, assert_one_line_error, data, run_args, write_jsonl  # noqa: F401 (fixture)
from test_data import TEMPLATE
from tiny import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("base") / "m", "llama", seed=0)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("bad", [b'{"question": "no text"}\n', b'{"text": "caf\xe9"}\n'], ids=["no-text", "not-utf8"])
def test_a_bad_training_file_is_refused_before_the_first_stage(model, data, tmp_path, capsys, bad):  # noqa: F811
    facts = tmp_path / "facts.jsonl"
    facts.write_bytes(b'{"text": "The capital of Zorbia is Quell."}\n' + bad)
    args = run_args(model, data, tmp_path / "run")
    args[args.index("--knowledge-train") + 1] = str(facts)
    assert_one_line_error(capsys, args, f"{facts}:2:")
    assert not (tmp_path / "run").exists()  # no expert trained, nothing half-written


def test_out_naming_a_file_is_refused_in_one_line(model, data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "a-file"
    out.write_text("mine\n")
    assert_one_line_error(capsys, run_args(model, data, out), f"--out {out} is a file")
    assert out.read_text() == "mine\n"


def test_a_second_command_on_one_run_directory_is_refused(model, data, tmp_path, capsys):  # noqa: F811
    from palora.io.artifacts import RunDir
    from palora.stages.opening import locked

    out = tmp_path / "run"
    with locked(RunDir(out)):  # another command holds the directory
        assert_one_line_error(capsys, run_args(model, data, out), "is in use by another palora command",
                              f"(pid {os.getpid()})")
        assert sorted(p.name for p in out.iterdir()) == [".palora.lock"]  # the refused command wrote nothing
    assert list(out.iterdir()) == []  # released: the lock file goes


def test_a_model_folder_that_is_no_checkpoint_is_named_in_one_line(data, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "just-data"
    folder.mkdir()
    write_jsonl(folder / "facts.jsonl", [{"text": "x"}])
    assert_one_line_error(capsys, run_args(folder, data, tmp_path / "run"),
                          f"model folder {folder} has no config.json: it is not a transformers checkpoint "
                          "(a folder written by save_pretrained)")


def test_an_adapter_folder_as_the_model_says_what_to_pass_instead(relative_run, data, tmp_path, capsys):  # noqa: F811
    adapter = relative_run / "methods" / "lora" / "adapter"
    assert_one_line_error(capsys, run_args(adapter, data, tmp_path / "run"), f"model folder {adapter} is a peft adapter",
                          "expert_model/")


def test_install_hints_name_packages_that_exist():
    """palora is not on a package index: a hint names the extra's packages and the clone's extra."""
    from palora.errors import install_hint

    assert install_hint("eval").startswith("pip install 'lm_eval") and "pip install -e '.[eval]'" in install_hint("eval")
    logging = install_hint("logging")  # an extra made of two others
    assert "'tensorboard" in logging and "'wandb" in logging and "palora-llm" not in logging


def test_a_hub_id_offline_fails_at_once(data, tmp_path, capsys, monkeypatch):  # noqa: F811
    from palora.io import models

    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    assert_one_line_error(capsys, run_args(Path("nobody-here/no-such-model"), data, tmp_path / "run"),
                          "model nobody-here/no-such-model is not in the local Hugging Face cache and the hub "
                          "cannot be reached")


def test_hub_reachable_is_false_when_no_connection_can_be_made(monkeypatch):
    import socket

    from palora.io import models

    def refuse(*args, **kwargs):
        raise OSError("no network")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    models._endpoint_answers.cache_clear()
    try:
        assert models.hub_reachable() is False
        monkeypatch.setattr(socket, "create_connection", lambda *a, **k: None)  # (not asked again: cached)
        assert models.hub_reachable() is False
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
        assert models.hub_reachable() is True  # behind a proxy transformers is left to try
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert models.hub_reachable() is False
    finally:
        models._endpoint_answers.cache_clear()


def test_conversational_data_trains_through_the_chat_template_or_is_refused_first(data, tmp_path, capsys):  # noqa: F811
    """TRL's ``{"messages": [...]}`` lines: rendered by the model's chat template; a tokenizer without
    one is refused before the first stage."""
    from transformers import AutoTokenizer

    chat = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "Where is Quell?"}, {"role": "assistant", "content": " In Zorbia."}]},
        {"prompt": [{"role": "user", "content": "Who wrote twelve books?"}],
         "completion": [{"role": "assistant", "content": " Bob Vane."}]}])
    plain = save_tiny_checkpoint(tmp_path / "plain", "llama", seed=0)
    capsys.readouterr()  # what saving the checkpoint printed
    args = run_args(plain, data, tmp_path / "refused")
    args[args.index("--knowledge-train") + 1] = chat
    assert_one_line_error(capsys, args, "needs a tokenizer with a chat template")
    assert not (tmp_path / "refused").exists()
    templated = save_tiny_checkpoint(tmp_path / "templated", "llama", seed=0)
    tok = AutoTokenizer.from_pretrained(templated)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(templated)
    args = run_args(templated, data, tmp_path / "run")
    args[args.index("--knowledge-train") + 1] = chat
    assert main(args) == 0


# ----------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def relative_run(model, data, tmp_path_factory) -> Path:  # noqa: F811
    """A run started with a relative --out, from its own working directory."""
    root = tmp_path_factory.mktemp("rel")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        args = run_args(model, data, Path("run"))
        assert main(args) == 0
    finally:
        os.chdir(cwd)
    return root / "run"


def test_an_adapter_loads_from_any_directory_and_has_a_real_card(relative_run, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    adapter = relative_run / "methods" / "palora" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((relative_run / "expert_model").resolve())
    monkeypatch.chdir(tmp_path)  # another directory than the run's
    assert AutoPeftModelForCausalLM.from_pretrained(str(adapter.resolve())) is not None
    card = (adapter / "README.md").read_text()
    stages = json.loads((relative_run / "stages.json").read_text())
    assert card.startswith("---\nlibrary_name: peft") and "# `palora` adapter" in card
    assert f"{stages['inject:palora']['certificate_in']:.2e}" in card and "sha256" in card
    assert "the paper" not in (relative_run / "methods" / "lora" / "adapter" / "README.md").read_text()


def test_a_finished_run_leaves_no_empty_folder_and_no_unread_sections(relative_run):
    assert not (relative_run / "checkpoints").exists()
    assert not (relative_run / ".palora.lock").exists()
    config = (relative_run / "config.yaml").read_text()
    assert not re.search(r"^(compare|data_gen):", config, flags=re.M)  # palora run reads neither


def test_plots_label_layers_as_whole_numbers_and_say_when_retention_is_undefined(relative_run, monkeypatch):
    from palora.report import plots

    figures = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.setdefault(Path(path).name, fig))
    plots.plot_scales(relative_run / "svf_expert.safetensors", Path("svf_scales.png"))
    for ax in figures["svf_scales.png"].axes[:-1]:  # the last axes is the colour bar
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[1] <= t <= ax.get_ylim()[0]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    rows = [{"name": "base", "retention": None, "knowledge_recall": 0.0, "knowledge_stderr": 0.0}]
    plots.plot_retention_vs_recall(rows, Path("retention_vs_recall.png"))
    texts = [t.get_text() for t in figures["retention_vs_recall.png"].axes[0].texts]
    assert any("retention is undefined" in t for t in texts)


# ----------------------------------------------------------------------------- the terminal


def test_help_imports_neither_torch_nor_peft():
    code = ("import sys, contextlib, io\nfrom palora.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_verb_teaches_its_own_keys_example_and_defaults(capsys):
    for argv in (["run", "--help"], ["demo", "--help"], ["svf", "--help"], ["config"]):
        with pytest.raises(SystemExit) if "--help" in argv else _nothing():
            main(argv)
        text = capsys.readouterr().out
        if argv[0] == "run":
            assert "svf.train.lr = 0.01" in text and "palora run --model" in text and "[the paper's method]" in text
        elif argv[0] == "demo":  # the demo's own settings, from palora/configs/demo.yaml
            assert "inject.methods = ['act-protect-replay']" in text and "svf.train.log_every = 25" in text
            assert "palora demo --out" in text and "compare.seeds" not in text
        elif argv[0] == "svf":
            assert "  svf.train.steps = " in text and "  inject.rank = " not in text and "palora svf --model" in text
        else:  # palora config: every key, with its allowed values
            assert "one of: numeric, exact, contains" in text and "one of: float32, bfloat16, float16" in text
            assert "compare.budget_seeds" in text and "inject.rank = 16" in text


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_quiet_run_prints_its_table_and_no_step_lines(model, data, tmp_path, capsys):  # noqa: F811
    assert main(run_args(model, data, tmp_path / "run")) == 0
    out = capsys.readouterr().out
    assert " step " not in out and "| palora |" in out
    steps = [*FAST, "--set", "svf.train.steps=40", "--set", "inject.train.steps=3"]
    args = [a for a in run_args(model, data, tmp_path / "loud") if a != "--quiet"] + steps[-4:]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("svf step ")]
    assert 0 < len(lines) <= 10  # at most a tenth of the stage's steps on the console


# ----------------------------------------------------------------------------- the README


def test_the_readme_library_snippet_runs(model):
    """The README's ``## Library`` snippet, with ``path`` a tiny checkpoint."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Library"):]
    snippet = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    namespace = {"path": str(model)}
    cwd = os.getcwd()
    try:
        os.chdir(model.parent)
        exec(compile(snippet.replace('"adapter/"', f'"{model.parent / "adapter"}"'), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert (model.parent / "adapter" / "adapter_config.json").is_file()


def test_a_stage_whose_result_is_gone_runs_again(model, data, tmp_path, capsys):  # noqa: F811
    """A run directory copied with its stages.json but not every result (or a result deleted) redoes
    exactly the stages whose results are missing, instead of skipping them and failing later."""
    out = tmp_path / "run"
    args = run_args(model, data, out)
    args[args.index("--methods") + 1] = "act-protect,lora"
    assert main(args) == 0
    (out / "subspace-activation.safetensors").unlink()
    lora = load_file(out / "methods" / "lora" / "adapter" / "adapter_model.safetensors")
    shutil.rmtree(out / "methods" / "lora")
    capsys.readouterr()
    assert main([a for a in args if a != "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "probe:activation: already done" not in said and "inject:lora: already done" not in said
    # the redone probe has the same digest, so what was built on it still holds
    assert "svf: already done" in said and "inject:act-protect: already done" in said
    assert (out / "subspace-activation.safetensors").is_file()
    # the same settings and seed: the redone adapter is the one removed, tensor for tensor
    again = load_file(out / "methods" / "lora" / "adapter" / "adapter_model.safetensors")
    assert again.keys() == lora.keys() and all(torch.equal(again[k], lora[k]) for k in lora)
