"""REINFORCE for the SVF expert on tiny models: the KL to the base is exactly 0 at identity scales,
a +1 reward raises (a −1 reward lowers) the sampled answers' log-probability, the loop is
reproducible and resumable, and `palora svf --objective reinforce` writes the stage's artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from invariants import stage_digest as digest
from palora.cli import main
from palora.config import ReinforceConfig, resolve
from palora.core.svf import add_svf, identity_scales, svf_layers
from palora.errors import DataError
from palora.io.data import TrainExample
from palora.training.checkpoint import CheckpointSpec
from palora.training.loop import train
from palora.training.reinforce import (
    PromptCollator,
    ReinforceObjective,
    _answer_mask,
    answer_logprob,
    answer_logprobs,
    kl_to_base,
    prompt_items,
    reinforce_loss,
    sample,
)
from test_cli import data, write_jsonl  # noqa: F401  (the module-scoped data fixture)
from tiny import make_tiny_model, save_tiny_checkpoint
from tiny_tokenizer import make_tiny_tokenizer

CFG = ReinforceConfig(steps=4, batch_size=3, samples_per_prompt=2, max_new_tokens=5, checkpoint_every=0)
EXAMPLES = [TrainExample(f"Question: what is {a} + {b}? Answer:", f" {a + b}") for a in range(1, 4) for b in (2, 5)]


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


def expert(tok, parametrization: str = "linear", seed: int = 0):
    model = make_tiny_model("llama", vocab_size=len(tok), seed=seed)
    add_svf(model, parametrization, progress=False)
    return model


def rollout_of(model, tok, cfg: ReinforceConfig = CFG, seed: int = 0):
    items = prompt_items(EXAMPLES[:3], tok, chat_template=False, checker="numeric")
    batch = PromptCollator(tok.pad_token_id)(items)
    torch.manual_seed(seed)
    model.eval()
    return sample(model, tok, batch, cfg), batch


def scales(model) -> dict[str, torch.Tensor]:
    return {n: layer.z.detach().clone() for n, layer in svf_layers(model).items()}


# ----------------------------------------------------------------------------- pieces


def test_answer_mask_stops_after_the_first_eos():
    new = torch.tensor([[5, 6, 2, 0, 2], [2, 7, 7, 7, 7], [5, 6, 7, 8, 9]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(_answer_mask(new, [2]), expected)


def test_prompts_come_from_prompt_completion_lines(tok):
    items = prompt_items(EXAMPLES, tok, chat_template=False, checker="numeric")
    assert [it.answer for it in items] == [ex.completion.strip() for ex in EXAMPLES]
    assert items[0].input_ids == tok(EXAMPLES[0].prompt, add_special_tokens=True)["input_ids"]
    batch = PromptCollator(tok.pad_token_id)(items[:2] + [items[0].__class__([1, 9], "3")])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][2].tolist()[-2:] == [1, 1] and batch["attention_mask"][2, 0] == 0  # left padding
    with pytest.raises(DataError, match="prompt, completion"):
        prompt_items([TrainExample("", "just text")], tok, False, "numeric")
    with pytest.raises(DataError, match="line 1"):
        prompt_items([TrainExample("q", " seven")], tok, False, "numeric")


def test_rollout_shapes_and_texts(tok):
    model = expert(tok)
    rollout, batch = rollout_of(model, tok)
    B, P = batch["input_ids"].shape
    k, N = CFG.samples_per_prompt, rollout.answers.shape[1]
    assert rollout.sequences.shape == (B * k, P + N) and N <= CFG.max_new_tokens
    assert torch.equal(rollout.sequences[::k, :P], batch["input_ids"])  # prompt j is rows j*k ... j*k + k - 1
    assert len(rollout.texts) == B * k
    # a row's answer tokens are exactly what its text decodes from
    for row, text in enumerate(rollout.texts):
        ids = rollout.answers[row][rollout.answer_mask[row]]
        assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_scored_log_probs_are_those_of_the_sampling_policy(tok, family):
    """Under left padding the scoring forward sees the positions generate saw: its log-probabilities
    at temperature T equal those of generate's own (processed) scores, token by token."""
    model = make_tiny_model(family, vocab_size=len(tok), seed=0)
    add_svf(model, "linear", progress=False)
    model.eval()
    cfg = ReinforceConfig(samples_per_prompt=2, max_new_tokens=5, temperature=0.7)
    examples = [EXAMPLES[0], TrainExample("Question: what is 12 + 30 minus the answer of 7 + 1? Answer:", " 34")]
    batch = PromptCollator(tok.pad_token_id)(prompt_items(examples, tok, False, "numeric"))
    assert (batch["attention_mask"] == 0).any()  # the shorter prompt is padded on the left
    torch.manual_seed(3)
    rollout = sample(model, tok, batch, cfg)
    torch.manual_seed(3)
    out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=True,
                         temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=5, num_return_sequences=2,
                         pad_token_id=tok.pad_token_id, eos_token_id=[tok.eos_token_id], output_scores=True,
                         return_dict_in_generate=True)
    assert torch.equal(out.sequences, rollout.sequences)
    expected = torch.stack(out.scores, 1).float().log_softmax(-1)  # (B·k, N, V)
    with torch.no_grad():
        got = answer_logprobs(model, rollout, cfg.temperature)
    m = rollout.answer_mask
    torch.testing.assert_close(got[m], expected[m], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- invariants of the loss


@pytest.mark.parametrize("parametrization", ["linear", "t2"])
def test_kl_to_the_base_is_zero_at_identity_scales(tok, parametrization):
    model = expert(tok, parametrization)
    rollout, _ = rollout_of(model, tok)
    with torch.no_grad():
        logp = answer_logprobs(model, rollout)
        with identity_scales(model):
            base = answer_logprobs(model, rollout)
    kl = kl_to_base(logp, base, rollout.answer_mask)
    if parametrization == "linear":  # s = z = 1 is bit for bit the identity
        assert torch.equal(kl, torch.zeros_like(kl))
    else:  # sigmoid(z)·κ is 1 up to rounding
        assert float(kl.abs().max()) < 1e-6
    with torch.no_grad():  # moved scales: a positive KL, and the identity block still gives the base
        for layer in svf_layers(model).values():
            layer.z.add_(0.2 * torch.randn(layer.z.shape, generator=torch.Generator().manual_seed(1)))
        moved = answer_logprobs(model, rollout)
        with identity_scales(model):
            again = answer_logprobs(model, rollout)
    assert torch.equal(again, base)
    assert float(kl_to_base(moved, base, rollout.answer_mask).min()) > 0


@pytest.mark.parametrize("reward", [1.0, -1.0])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_a_step_moves_the_sampled_answers_log_prob_with_the_reward(tok, reward, reduction):
    """All rewards +1: one gradient step raises log π(a | x) of the sampled answers; all −1: lowers it."""
    model = expert(tok)
    cfg = ReinforceConfig(samples_per_prompt=2, max_new_tokens=5, token_reduction=reduction)
    rollout, _ = rollout_of(model, tok, cfg)
    before = answer_logprob(answer_logprobs(model, rollout), rollout, reduction).detach()
    rewards = torch.full((rollout.sequences.shape[0],), reward)
    loss, stats = reinforce_loss(model, rollout, rewards, cfg)
    assert stats == {}  # no KL term at kl_coeff = 0
    torch.testing.assert_close(loss, -(reward * before).mean())
    loss.backward()
    layers = svf_layers(model).values()
    norm = torch.sqrt(sum((layer.z.grad ** 2).sum() for layer in layers))
    assert float(norm) > 0
    with torch.no_grad():  # a small step of fixed length down the gradient
        for layer in layers:
            layer.z -= 1e-2 * layer.z.grad / norm
        after = answer_logprob(answer_logprobs(model, rollout), rollout, reduction)
    assert float(reward * (after - before).mean()) > 0


def test_kl_term_adds_kl_coeff_times_the_mean_kl(tok):
    model = expert(tok)
    with torch.no_grad():
        for layer in svf_layers(model).values():
            layer.z.mul_(1.1)
    cfg = ReinforceConfig(samples_per_prompt=2, max_new_tokens=5, kl_coeff=0.3)
    rollout, _ = rollout_of(model, tok, cfg)
    rewards = torch.ones(rollout.sequences.shape[0])
    with_kl, stats = reinforce_loss(model, rollout, rewards, cfg)
    without, _ = reinforce_loss(model, rollout, rewards, ReinforceConfig(samples_per_prompt=2, max_new_tokens=5))
    assert stats["kl"] > 0
    torch.testing.assert_close(with_kl - without, torch.tensor(0.3 * stats["kl"]), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- the loop


def run_loop(tok, seed: int, cfg: ReinforceConfig = CFG, checkpoint: CheckpointSpec | None = None):
    torch.manual_seed(0)
    model = expert(tok)
    items = prompt_items(EXAMPLES, tok, False, "numeric")
    result = train(model, items, PromptCollator(tok.pad_token_id), cfg, seed=seed, stage="svf", progress=False,
                   checkpoint=checkpoint, loss_fn=ReinforceObjective(tok, cfg, "numeric"))
    return model, result


def test_same_seed_same_scales_other_seed_other_scales(tok):
    a, ra = run_loop(tok, seed=1)
    b, rb = run_loop(tok, seed=1)
    c, _ = run_loop(tok, seed=2)
    za, zb, zc = scales(a), scales(b), scales(c)
    assert all(torch.equal(za[n], zb[n]) for n in za) and ra.losses == rb.losses
    assert any(not torch.equal(za[n], zc[n]) for n in za)
    assert any(not torch.equal(za[n], torch.ones_like(za[n])) for n in za)  # it did train


def test_resumed_reinforce_loop_is_bitwise_the_uninterrupted_one(tok, tmp_path):
    """Sampling draws from the torch RNG, which the checkpoint restores: the resumed run is exact."""
    cfg = ReinforceConfig(steps=6, batch_size=3, samples_per_prompt=2, max_new_tokens=5, checkpoint_every=3)
    spec = CheckpointSpec(tmp_path / "ckpt", 3, "digest")
    first, r1 = run_loop(tok, 0, cfg, spec)
    assert json.loads((spec.folder / "state.json").read_text())["step"] == 3
    second, r2 = run_loop(tok, 0, cfg, spec)
    assert r2.losses == r1.losses
    za, zb = scales(first), scales(second)
    assert all(torch.equal(za[n], zb[n]) for n in za)


# ----------------------------------------------------------------------------- the CLI

FAST = ["--set", "svf.reinforce.steps=3", "--set", "svf.reinforce.batch_size=3",
        "--set", "svf.reinforce.samples_per_prompt=2", "--set", "svf.reinforce.max_new_tokens=4",
        "--set", "svf.reinforce.kl_coeff=0.1", "--quiet"]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_svf_objective_reinforce_writes_the_stage_artifacts(data, tmp_path):  # noqa: F811
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["svf", "--model", str(model), "--skill-train", data["skill_train"], "--out", str(out),
                     "--seed", "0", "--objective", "reinforce", *FAST]) == 0
        runs.append(out)
    a, b = runs
    for f in ("svf_expert.safetensors", "expert_model/config.json", "expert_model/model.safetensors", "config.yaml"):
        assert (a / f).is_file(), f
    za, zb = tensors(a / "svf_expert.safetensors"), tensors(b / "svf_expert.safetensors")
    assert za.keys() == zb.keys() and all(torch.equal(za[k], zb[k]) for k in za)  # same seed, same expert
    assert any(not torch.equal(v, torch.ones_like(v)) for k, v in za.items() if k.endswith(".z"))
    stage = json.loads((a / "stages.json").read_text())["svf"]
    assert stage["objective"] == "reinforce"
    lines = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert all(-1 <= x["reward"] <= 1 and x["kl"] >= 0 for x in lines)
    assert all(x["lr"] == 2e-3 for x in lines)  # Transformer²'s rate, constant
    # the same command again: the stage is done; another objective is another expert (refused)
    assert main(["svf", "--out", str(a), "--objective", "reinforce", *FAST]) == 0
    assert main(["svf", "--out", str(a), "--objective", "sft", "--quiet"]) == 2
    # the expert feeds the next stages as an sft expert does
    assert main(["probe", "--out", str(a), "--methods", "palora", "--quiet"]) == 0
    assert (a / "subspace.safetensors").is_file()


def test_sft_digest_ignores_the_reinforce_settings():
    """Settings of an objective not in use change nothing: old sft runs keep their stage digest."""
    base = resolve(None, [])
    assert digest(resolve(None, ["svf.reinforce.lr=0.5", "svf.reinforce.kl_coeff=1"]), "svf") == digest(base, "svf")
    rl = resolve(None, ["svf.objective=reinforce"])
    assert digest(rl, "svf") != digest(base, "svf")
    assert digest(resolve(None, ["svf.objective=reinforce", "svf.train.lr=0.5"]), "svf") == digest(rl, "svf")
    assert digest(resolve(None, ["svf.objective=reinforce", "svf.reinforce.kl_coeff=0.2"]), "svf") != digest(rl, "svf")


def test_text_lines_are_refused_for_reinforce(tmp_path, capsys):
    model = save_tiny_checkpoint(tmp_path / "base", "llama", seed=0)
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "1 + 1 = 2"}])
    assert main(["svf", "--model", str(model), "--skill-train", text, "--out", str(tmp_path / "o"),
                 "--objective", "reinforce", "--quiet"]) == 2
    assert "prompt, completion" in capsys.readouterr().err


def test_init_from_starts_from_another_experts_scales(data_for_init, tmp_path):
    """``svf.init_from``: one step at a negligible rate leaves the starting expert's scales."""
    model, skill = data_for_init
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--model", str(model), "--skill-train", skill, "--seed", "0", "--quiet",
              "--set", "svf.train.batch_size=4"]
    assert main(["svf", "--out", str(first), "--set", "svf.train.steps=3", *common]) == 0
    assert main(["svf", "--out", str(second), "--set", "svf.train.steps=1", "--set", "svf.train.lr=1e-12",
                 "--set", f"svf.init_from={first / 'svf_expert.safetensors'}", *common]) == 0
    a, b = load_file(str(first / "svf_expert.safetensors")), load_file(str(second / "svf_expert.safetensors"))
    zs = [k for k in a if k.endswith(".z")]
    assert zs and max(float((a[k] - b[k]).abs().max()) for k in zs) < 1e-6
    assert max(float((a[k] - 1).abs().max()) for k in zs) > 1e-4  # the first expert did move
    # scales of another parametrisation are refused in one line
    assert main(["svf", "--out", str(tmp_path / "third"), "--set", "svf.parametrization=t2",
                 "--set", f"svf.init_from={first / 'svf_expert.safetensors'}", *common]) == 2


@pytest.fixture(scope="module")
def data_for_init(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    rows = [{"prompt": f"Q: {a} + {b}? A:", "completion": f" {a + b}"} for a in range(1, 7) for b in range(2, 5)]
    path = root / "skill.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, str(path)
