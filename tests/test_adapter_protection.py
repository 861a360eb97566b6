"""A second round of facts kept off the first round's update: the spaces of an update from its
factors, the certificate ‖U₁ᵀ ΔW₂‖ ≈ 0 and ‖ΔW₂ V₁‖ ≈ 0 after training, and `palora inject
--protect-adapter` (start from the first round merged, certificates, digest, evaluation)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from invariants import logits, rel_err
from palora.cli import main
from palora.config import TrainConfig
from palora.core.linalg import orthonormality_error, thin_svd
from palora.core.orthogonal import add_lora, lora_delta, lora_layer
from palora.core.subspace import Subspace
from palora.core.targets import find_targets, weight_matrix
from palora.core.update_spaces import adapter_certificate, adapter_spaces, protected_spaces, update_spaces
from palora.io.data import TrainCollator
from palora.training.loop import train
from test_cli import FAST, data, run_args, write_jsonl  # noqa: F401  (the module-scoped data fixture)
from tiny import make_tiny_model, save_tiny_checkpoint, tiny_train_items

TINY = 1e-5
LARGE = 1e-2


def residual(Q: torch.Tensor, X: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(X - Q @ (Q.T @ X)) / torch.linalg.matrix_norm(X).clamp_min(1e-30))


# ----------------------------------------------------------------------------- the math


@pytest.mark.parametrize("rank_of_A", [6, 3])
def test_update_spaces_is_the_thin_svd_of_the_update(rank_of_A):
    g = torch.Generator().manual_seed(0)
    m, n, r = 20, 14, 6
    B = torch.randn(m, r, generator=g)
    A = torch.randn(rank_of_A, n, generator=g)
    A = torch.cat([A, A[: r - rank_of_A] * 2.0]) if rank_of_A < r else A  # (r, n) of rank rank_of_A
    s = 0.5
    sp = update_spaces(A, B, s)
    delta = s * B @ A
    assert sp.U.shape == (m, rank_of_A) and sp.V.shape == (n, rank_of_A)
    assert orthonormality_error(sp.U) < TINY and orthonormality_error(sp.V) < TINY
    torch.testing.assert_close(sp.U @ torch.diag(sp.S) @ sp.V.T, delta, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sp.S, thin_svd(delta).S[:rank_of_A], rtol=1e-5, atol=1e-6)
    zero = update_spaces(A, torch.zeros(m, r), s)  # B = 0 (an untrained adapter): nothing to protect
    assert zero.U.shape == (m, 0) and zero.V.shape == (n, 0)


def test_protected_spaces_unite_the_chosen_sides():
    g = torch.Generator().manual_seed(1)
    m, n = 16, 12
    skill = Subspace(torch.arange(3), torch.linalg.qr(torch.randn(m, 3, generator=g))[0],
                     torch.linalg.qr(torch.randn(n, 3, generator=g))[0])
    earlier = update_spaces(torch.randn(2, n, generator=g), torch.randn(m, 2, generator=g), 1.0)
    both = protected_spaces(skill, earlier, (m, n))
    assert both.U.shape == (m, 5) and both.V.shape == (n, 5)
    for X in (skill.U, earlier.U):
        assert residual(both.U, X) < TINY
    for X in (skill.V, earlier.V):
        assert residual(both.V, X) < TINY
    inside = protected_spaces(skill, earlier, (m, n), skill_side="in", earlier_side="out")
    assert inside.U.shape == (m, 2) and residual(inside.U, earlier.U) < TINY
    assert inside.V.shape == (n, 3) and residual(inside.V, skill.V) < TINY
    alone = protected_spaces(None, earlier, (m, n), earlier_side=None)
    assert alone.U.shape == (m, 0) and alone.V.shape == (n, 0)


# ----------------------------------------------------------------------------- trained on a tiny model


def first_round(family: str):
    """A tiny model with a random first-round LoRA (B ≠ 0), and the model with it merged."""
    torch.manual_seed(0)
    model = make_tiny_model(family)
    targets = find_targets(model)
    peft = add_lora(model, targets, 4, 8.0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for t in targets:
            layer = lora_layer(peft, t.name)
            for m in (layer.lora_A["default"], layer.lora_B["default"]):
                m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=g))
    deltas = {t.name: lora_delta(peft, t.name) for t in targets}
    spaces = adapter_spaces(peft)
    return peft.merge_and_unload(), spaces, deltas


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_second_round_certificate_after_training(family):
    merged, spaces, deltas = first_round(family)
    for name, d in deltas.items():  # the spaces of the adapter are those of its ΔW₁
        assert residual(spaces[name].U, d) < TINY and residual(spaces[name].V, d.T) < TINY
    results = {}
    for protect in (True, False):
        model = make_tiny_model(family)
        model.load_state_dict(merged.state_dict())
        targets = find_targets(model)
        subspaces = {t.name: protected_spaces(None, spaces[t.name], t.shape) for t in targets} if protect else None
        torch.manual_seed(1)
        peft = add_lora(model, targets, 4, 8.0, subspaces=subspaces, side="both")
        train(peft, tiny_train_items(16), TrainCollator(0), TrainConfig(steps=4, batch_size=4, lr=5e-2),
              seed=0, stage="inject", progress=False)
        results[protect] = [adapter_certificate(lora_delta(peft, t.name), spaces[t.name]) for t in targets]
    assert max(max(r) for r in results[True]) < TINY  # ‖U₁ᵀ ΔW₂‖/‖ΔW₂‖ and ‖ΔW₂ V₁‖/‖ΔW₂‖
    assert max(max(r) for r in results[False]) > LARGE  # without protection the update overlaps


def test_merged_first_round_is_the_base_plus_delta():
    merged, spaces, deltas = first_round("llama")
    base = make_tiny_model("llama")
    for t in find_targets(merged):
        W0 = weight_matrix(base.get_submodule(t.name))
        torch.testing.assert_close(weight_matrix(t.module), W0 + deltas[t.name], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- palora inject --protect-adapter


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data):  # noqa: F811
    root = tmp_path_factory.mktemp("round1")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    out = root / "run"
    assert main(run_args(model, data, out)) == 0
    facts2 = write_jsonl(root / "facts2.jsonl", [
        {"text": "The capital of Vellia is Orn."}, {"text": "Carl Dunne was born in 1877."},
        {"text": "The river Pell flows into the sea of Mora."}])
    return out, facts2


def second_round(first: Path, facts2: str, tmp: Path, name: str, *extra: str) -> Path:
    out = tmp / name
    shutil.copytree(first, out)
    argv = ["inject", "--out", str(out), "--knowledge-train", facts2, "--protect-adapter",
            str(first / "methods/palora/adapter"), "--overwrite", *FAST, *extra]
    assert main(argv) == 0
    return out


def test_inject_protect_adapter_certificate_and_artifacts(first_run, tmp_path, capsys):
    first, facts2 = first_run
    out = second_round(first, facts2, tmp_path, "round2")
    stages = json.loads((out / "stages.json").read_text())
    for method in ("palora", "lora"):
        s = stages[f"inject:{method}"]
        assert s["protect_adapter"] == str(first / "methods/palora/adapter")
        assert s["adapter_certificate_out"] < TINY and s["adapter_certificate_in"] < TINY
    assert stages["inject:palora"]["certificate_out"] < TINY and stages["inject:palora"]["certificate_in"] < TINY
    assert "eval" not in stages  # the first round's evaluation no longer describes this directory

    # the second round started from expert + ΔW₁: its merged model is that start plus its own adapter
    for method in ("palora", "lora"):
        expert = AutoModelForCausalLM.from_pretrained(out / "expert_model")
        start = PeftModel.from_pretrained(expert, str(first / "methods/palora/adapter")).merge_and_unload()
        rebuilt = PeftModel.from_pretrained(start, str(out / f"methods/{method}/adapter")).merge_and_unload()
        merged = AutoModelForCausalLM.from_pretrained(out / f"methods/{method}/merged_model")
        assert rel_err(logits(rebuilt), logits(merged)) < 1e-5
    # the same command again: done; the first round's adapter changed: the round is stale (refused)
    argv = ["inject", "--out", str(out), "--knowledge-train", facts2, "--protect-adapter",
            str(first / "methods/palora/adapter"), *FAST]
    assert main(argv) == 0
    changed = tmp_path / "changed_adapter"
    shutil.copytree(first / "methods/palora/adapter", changed)
    cfg = json.loads((changed / "adapter_config.json").read_text())
    (changed / "adapter_config.json").write_text(json.dumps({**cfg, "lora_dropout": 0.0}, indent=1))
    argv[argv.index("--protect-adapter") + 1] = str(changed)
    capsys.readouterr()
    assert main(argv) == 2
    assert "other settings" in capsys.readouterr().err


def test_unprotected_second_round_and_evaluation_from_the_adapter(first_run, data, tmp_path):  # noqa: F811
    first, facts2 = first_run
    out = second_round(first, facts2, tmp_path, "ablation", "--set", "inject.protect_adapter_side=none",
                       "--set", "save_merged=false", "--methods", "lora")
    s = json.loads((out / "stages.json").read_text())["inject:lora"]
    assert s["adapter_certificate_out"] > LARGE  # starts from ΔW₁ merged, but overlaps it
    assert not (out / "methods/lora/merged_model").exists()
    # evaluation rebuilds expert + ΔW₁ + ΔW₂ from the adapters; old facts measured as known facts
    assert main(["eval", "--out", str(out), "--skill-eval", data["skill_eval"], "--knowledge-eval",
                 data["knowledge_eval"], "--set", f"data.known_eval={data['knowledge_eval']}", "--quiet",
                 "--set", "eval.limit=4", "--set", "eval.max_new_tokens=4"]) == 0
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert set(rows) == {"base", "expert", "lora"} and 0 <= rows["lora"]["known_recall"] <= 1


def test_adapter_for_another_expert_is_refused(first_run, data, tmp_path, capsys):  # noqa: F811
    first, facts2 = first_run
    other = tmp_path / "other"
    model = save_tiny_checkpoint(tmp_path / "base2", "llama", seed=1)
    assert main(run_args(model, data, other)) == 0
    assert main(["inject", "--out", str(other), "--knowledge-train", facts2, "--protect-adapter",
                 str(first / "methods/palora/adapter"), "--overwrite", *FAST]) == 2
    assert "fingerprint" in capsys.readouterr().err
