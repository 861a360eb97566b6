"""palora adapters inside transformers' Trainer and TRL's SFTTrainer (palora.integrations.hf), on
tiny models: z trains and is never decayed, the callback's files load back to the trained model,
the projection survives saving, the trainer's own checkpoints resume, the examples run."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from invariants import logits, rel_err
from palora.core.linalg import fingerprint
from palora.core.orthogonal import (
    add_lora,
    bake_projections,
    certificate,
    lora_delta,
    lora_layer,
    projected_modules,
    projected_state_dict,
)
from palora.core.probe import SelectionRule, select_subspace
from palora.core.svf import add_svf, load_svf_state, merge_svf, svf_layers, svf_state
from palora.core.targets import find_targets
from palora.errors import ArtifactError, FingerprintError, ModelError, PaloraError
from palora.integrations.hf import (
    SaveAdapterCallback,
    create_optimizer,
    optimizer_grouped_parameters,
    prepare_orthogonal_lora,
    prepare_svf,
    save_adapter,
)
from palora.io.artifacts import check_adapter, load_subspace, load_svf_expert, save_subspace
from palora.io.data import TrainCollator
from tiny import make_tiny_model, save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = 1e-5
STEPS = 4


def items(n: int = 16, length: int = 12) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (n, length), generator=g).tolist()
    return [{"input_ids": x, "labels": x} for x in ids]


def training_args(out: Path, weight_decay: float = 0.1, max_steps: int = STEPS) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out / "checkpoints"), max_steps=max_steps, per_device_train_batch_size=4,
        learning_rate=1e-2, weight_decay=weight_decay, save_steps=2, logging_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )


def trainer(model: torch.nn.Module, args: TrainingArguments, out: Path, optimizer: bool = True) -> Trainer:
    """A stock Trainer with palora's optimizer (or the default one) and the adapter callback."""
    return Trainer(
        model=model, args=args, train_dataset=items(), data_collator=TrainCollator(0),
        optimizers=(create_optimizer(model, args) if optimizer else None, None),
        callbacks=[SaveAdapterCallback(out)],
    )


def z_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: layer.z.detach().clone() for name, layer in svf_layers(model).items()}


# ----------------------------------------------------------------------------- SVF


@pytest.fixture(scope="module", params=["llama", "gpt2"])  # gpt2: Conv1D stores W transposed
def svf_run(request, tmp_path_factory):
    """An SVF expert trained by Trainer for STEPS steps with weight_decay=0.1."""
    out = tmp_path_factory.mktemp(f"svf-{request.param}")
    model = prepare_svf(make_tiny_model(request.param))
    z_ids = {id(layer.z) for layer in svf_layers(model).values()}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in z_ids}
    z0 = z_params(model)
    t = trainer(model, training_args(out), out)
    t.train()
    return request.param, model, t, out, frozen, z0


def test_trainer_trains_z_and_nothing_else(svf_run):
    _, model, _, _, frozen, z0 = svf_run
    z = z_params(model)
    assert max(float((z[n] - z0[n]).abs().max()) for n in z) > 1e-4
    z_ids = {id(layer.z) for layer in svf_layers(model).values()}
    for name, p in model.named_parameters():
        if id(p) not in z_ids:
            assert torch.equal(p, frozen[name]), name


def test_z_is_never_weight_decayed(svf_run):
    _, model, t, _, _, _ = svf_run
    z_ids = {id(layer.z) for layer in svf_layers(model).values()}
    in_optimizer = {id(p): g["weight_decay"] for g in t.optimizer.param_groups for p in g["params"]}
    assert z_ids <= set(in_optimizer)
    assert all(in_optimizer[i] == 0.0 for i in z_ids)


def test_grouped_parameters_decay_everything_else():
    model = prepare_svf(make_tiny_model("llama"))
    model.lm_head.weight.requires_grad_(True)  # a trainable parameter no adapter declares
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer_grouped_parameters(model, 0.1)}
    assert groups[0.0] == {id(layer.z) for layer in svf_layers(model).values()}
    assert groups[0.1] == {id(model.lm_head.weight)}


def test_default_trainer_optimizer_is_refused_before_any_step(tmp_path):
    model = prepare_svf(make_tiny_model("llama"))
    z0 = z_params(model)
    t = trainer(model, training_args(tmp_path, weight_decay=0.1), tmp_path, optimizer=False)
    with pytest.raises(PaloraError, match="weight-decays the SVF scales z"):
        t.train()
    assert all(torch.equal(z0[n], z) for n, z in z_params(model).items())


def test_callback_writes_the_svf_expert_that_reproduces_the_trained_model(svf_run):
    family, model, t, out, _, _ = svf_run
    callback = next(c for c in t.callback_handler.callbacks if isinstance(c, SaveAdapterCallback))
    assert callback.saved_step == STEPS
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "svf_expert.safetensors"]  # nothing else

    fresh = make_tiny_model(family)
    state, meta = load_svf_expert(out / "svf_expert.safetensors", fingerprint(find_targets(fresh)))
    assert meta["parametrization"] == "linear"
    add_svf(fresh, meta["parametrization"], progress=False)
    load_svf_state(fresh, state)
    assert rel_err(logits(fresh), logits(model)) < TINY
    merge_svf(fresh)  # the expert fingerprint of the header is the merged expert's
    assert fingerprint(find_targets(fresh)) == meta["expert_fingerprint"]


def test_svf_expert_of_another_model_is_refused(svf_run):
    family, _, _, out, _, _ = svf_run
    other = make_tiny_model(family, seed=1)
    with pytest.raises(FingerprintError):
        load_svf_expert(out / "svf_expert.safetensors", fingerprint(find_targets(other)))


# ----------------------------------------------------------------------------- orthogonal LoRA


@pytest.fixture(scope="module")
def expert_and_subspace(tmp_path_factory):
    """A tiny expert (random z, merged) and its subspace file, as `palora probe` writes them."""
    folder = tmp_path_factory.mktemp("lora")
    base = make_tiny_model("llama")
    base_fp = fingerprint(find_targets(base))
    expert = prepare_svf(copy.deepcopy(base))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in svf_layers(expert).values():
            layer.z.copy_(1 + 0.3 * torch.randn(layer.z.shape, generator=g))
    state = svf_state(expert)
    merge_svf(expert)
    expert_fp = fingerprint(find_targets(expert))
    subspaces, _ = select_subspace(find_targets(base), state, "linear", "delta",
                                   SelectionRule("fraction", fraction=0.25), progress=False)
    save_subspace(folder / "subspace.safetensors", subspaces, base_fp, expert_fp, "fraction 0.25", "delta")
    return expert, subspaces, folder / "subspace.safetensors"


@pytest.fixture(scope="module")
def lora_run(expert_and_subspace, tmp_path_factory):
    expert, subspaces, path = expert_and_subspace
    out = tmp_path_factory.mktemp("lora-run")
    torch.manual_seed(0)
    model = prepare_orthogonal_lora(copy.deepcopy(expert), path, rank=4, alpha=8)
    t = trainer(model, training_args(out), out)
    t.train()
    return model, subspaces, out


def test_projection_survives_the_callback_and_training_goes_on(lora_run):
    model, subspaces, _ = lora_run
    assert projected_modules(model)  # not baked by the saves at step 2 and 4
    for name, sub in subspaces.items():
        delta = lora_delta(model, name)
        assert float(delta.abs().max()) > 0  # B moved from 0
        assert max(certificate(delta, sub)) < TINY


def test_saved_adapter_is_plain_peft_and_reproduces_the_trained_model(lora_run, expert_and_subspace):
    model, subspaces, out = lora_run
    expert = expert_and_subspace[0]
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints"]
    loaded = PeftModel.from_pretrained(copy.deepcopy(expert), str(out / "adapter"))
    assert not projected_modules(loaded)
    assert rel_err(logits(loaded), logits(model)) < TINY
    for name, sub in subspaces.items():
        assert max(certificate(lora_delta(loaded, name), sub)) < TINY
    meta = check_adapter(out / "adapter", fingerprint(find_targets(expert)))  # palora's own check
    assert meta["palora_method"] == "palora"


def test_projected_state_dict_is_the_baked_state_dict_and_leaves_the_model_alone(lora_run):
    model = lora_run[0]
    state = projected_state_dict(model)
    assert projected_modules(model)
    baked = copy.deepcopy(model)
    bake_projections(baked)
    expected = baked.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)

def test_lora_on_the_base_model_is_accepted_and_another_model_is_refused(expert_and_subspace):
    _, _, path = expert_and_subspace
    prepare_orthogonal_lora(make_tiny_model("llama"), path, rank=4, alpha=8)  # the expert's base
    with pytest.raises(FingerprintError, match="made for other weights"):
        prepare_orthogonal_lora(make_tiny_model("llama", seed=1), path, rank=4, alpha=8)
    with pytest.raises(ModelError, match="merge_svf"):  # an SVF model not merged yet
        prepare_orthogonal_lora(prepare_svf(make_tiny_model("llama")), path, rank=4, alpha=8)



def test_indices_only_subspace_is_rebuilt_from_the_base_model(expert_and_subspace, tmp_path):
    expert, subspaces, path = expert_and_subspace
    _, meta = load_subspace(path, None)
    save_subspace(tmp_path / "indices.safetensors", subspaces, meta["base_fingerprint"],
                  meta["expert_fingerprint"], "fraction 0.25", "delta", store_vectors=False)
    model = prepare_orthogonal_lora(make_tiny_model("llama"), tmp_path / "indices.safetensors", rank=4, alpha=8)
    with torch.no_grad():
        for name in subspaces:
            lora_layer(model, name).lora_B["default"].parametrizations.weight.original.normal_()
    for name, sub in subspaces.items():
        assert max(certificate(lora_delta(model, name), sub)) < TINY
    with pytest.raises(ArtifactError, match="indices only"):
        prepare_orthogonal_lora(copy.deepcopy(expert), tmp_path / "indices.safetensors", rank=4, alpha=8)

def test_plain_lora_saves_as_lora_and_a_model_without_adapter_is_refused(tmp_path):
    model = make_tiny_model("llama")
    targets = find_targets(model)
    fp = fingerprint(targets)
    with pytest.raises(PaloraError, match="nothing to save"):
        save_adapter(model, tmp_path)
    (path,) = save_adapter(add_lora(model, targets, 4, 8), tmp_path)  # no subspace: plain peft LoRA
    meta = check_adapter(path, fp)
    assert (meta["palora_method"], meta["base_fingerprint"]) == ("lora", fp)

# ----------------------------------------------------------------------------- Trainer's own checkpoints


@pytest.mark.parametrize("adapter", ["svf", "palora"])
def test_trainer_checkpoints_resume_exactly(adapter, expert_and_subspace, tmp_path):
    """The trainer's checkpoint-N of a parametrised model resumes to the uninterrupted result."""
    expert, _, path = expert_and_subspace

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        if adapter == "svf":
            return prepare_svf(make_tiny_model("llama"))
        return prepare_orthogonal_lora(copy.deepcopy(expert), path, rank=4, alpha=8)

    def trainable(model: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in model.parameters() if p.requires_grad]

    first = build()
    trainer(first, training_args(tmp_path / "a"), tmp_path / "a").train()
    assert (tmp_path / "a" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = build()
    trainer(resumed, training_args(tmp_path / "b"), tmp_path / "b").train(
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoints" / "checkpoint-2"))
    for p, q in zip(trainable(first), trainable(resumed)):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- TRL


def test_trl_sft_trainer_trains_svf_without_decaying_z(tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from tiny_tokenizer import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    model = prepare_svf(make_tiny_model("llama", vocab_size=len(tok)))
    z0 = z_params(model)
    config = SFTConfig(output_dir=str(tmp_path / "checkpoints"), max_steps=2, per_device_train_batch_size=4,
                       learning_rate=1e-2, weight_decay=0.1, bf16=False, save_strategy="no",
                       logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    data = Dataset.from_list([{"prompt": f"Q: {i} + {i}?", "completion": f" {2 * i}"} for i in range(8)])
    SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok,
               optimizers=(create_optimizer(model, config), None),
               callbacks=[SaveAdapterCallback(tmp_path)]).train()
    assert max(float((z - z0[n]).abs().max()) for n, z in z_params(model).items()) > 1e-4
    state, _ = load_svf_expert(tmp_path / "svf_expert.safetensors", None)
    assert all(torch.equal(state[f"{n}.z"], z) for n, z in z_params(model).items())


# ----------------------------------------------------------------------------- the examples


def run_example(script: str, *args: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], env=env, check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def svf_example(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    tiny = save_tiny_checkpoint(folder / "tiny")
    seconds = run_example("trainer_svf.py", "--model", str(tiny), "--out", str(folder / "run"),
                          "--steps", "3", "--save-steps", "2", "--batch-size", "4")
    return tiny, folder / "run", seconds


def test_trainer_svf_example_runs_end_to_end(svf_example):
    tiny, run, seconds = svf_example
    assert seconds < 30
    base = AutoModelForCausalLM.from_pretrained(tiny)
    state, meta = load_svf_expert(run / "svf_expert.safetensors", fingerprint(find_targets(base)))
    expert = AutoModelForCausalLM.from_pretrained(run / "expert_model")  # a stock checkpoint
    assert fingerprint(find_targets(expert)) == meta["expert_fingerprint"]
    add_svf(base, meta["parametrization"], progress=False)
    load_svf_state(base, state)
    assert rel_err(logits(base), logits(expert)) < TINY


def test_trl_orthogonal_lora_example_runs_end_to_end(svf_example):
    pytest.importorskip("trl")
    tiny, run, _ = svf_example
    base = AutoModelForCausalLM.from_pretrained(tiny)
    state, meta = load_svf_expert(run / "svf_expert.safetensors", None)
    subspaces, _ = select_subspace(find_targets(base), state, meta["parametrization"], "delta",
                                   SelectionRule("fraction", fraction=0.25), progress=False)
    save_subspace(run / "subspace.safetensors", subspaces, meta["base_fingerprint"], meta["expert_fingerprint"],
                  "fraction 0.25", "delta")
    out = run.parent / "inject"
    seconds = run_example("trl_sft_orthogonal_lora.py", "--model", str(run / "expert_model"),
                          "--subspace", str(run / "subspace.safetensors"), "--out", str(out),
                          "--steps", "3", "--save-steps", "2", "--batch-size", "4", "--rank", "4")
    assert seconds < 30
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "expert_model"),
                                       str(out / "adapter"))
    for name, sub in subspaces.items():
        delta = lora_delta(loaded, name)
        assert float(delta.abs().max()) > 0
        assert max(certificate(delta, sub)) < TINY

