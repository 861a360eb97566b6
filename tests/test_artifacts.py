"""Run-directory artifacts: bit-exact round trips, fingerprint checks, refusing broken or pickled
files, atomic writes, and the fingerprint itself."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

from palora import __version__
from palora.core.linalg import fingerprint, thin_svd
from palora.core.orthogonal import add_lora
from palora.core.subspace import Subspace
from palora.core.svf import add_svf, svf_state
from palora.core.targets import find_targets, weight_matrix
from palora.errors import ArtifactError, FingerprintError
from palora.io.artifacts import (
    ADAPTER_WEIGHTS,
    RunDir,
    atomic_path,
    check_adapter,
    load_subspace,
    load_svf_expert,
    read_safetensors,
    save_subspace,
    save_svf_expert,
    stamp_adapter,
)
from tiny import make_tiny_model


def svf_expert_state(family: str = "llama") -> dict[str, torch.Tensor]:
    model = make_tiny_model(family)
    layers = add_svf(model, "t2", progress=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in layers.values():
            layer.z.add_(torch.randn(layer.z.shape, generator=g))
    return svf_state(model)


def subspaces(family: str = "gpt2", with_weights: bool = True) -> dict[str, Subspace]:
    model = make_tiny_model(family)
    out = {}
    for t in find_targets(model):
        svd = thin_svd(weight_matrix(t.module))
        idx = torch.tensor([0, 5, 17, svd.S.numel() - 1])
        out[t.name] = Subspace.from_svd(svd, idx, torch.rand(4) if with_weights else None)
    return out


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_svf_expert_round_trip_is_bit_exact(tmp_path, family):
    state = svf_expert_state(family)
    path = tmp_path / "svf_expert.safetensors"
    save_svf_expert(path, state, "t2", "base0123", "expert0123")
    loaded, meta = load_svf_expert(path, "base0123")
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v), k
    assert meta["parametrization"] == "t2"
    assert meta["base_fingerprint"] == "base0123" and meta["expert_fingerprint"] == "expert0123"
    assert meta["palora_version"] == __version__
    assert load_svf_expert(path, None)[1] == meta  # None skips the check
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no temporary left over


@pytest.mark.parametrize("with_weights", [True, False])
def test_subspace_round_trip_is_bit_exact(tmp_path, with_weights):
    subs = subspaces(with_weights=with_weights)
    path = tmp_path / "subspace.safetensors"
    save_subspace(path, subs, "base", "expert", "fraction=0.25", "delta")
    grouped, meta = load_subspace(path, "base")
    assert set(grouped) == set(subs)
    for name, s in subs.items():
        g = grouped[name]
        assert g["indices"].dtype == torch.int64 and torch.equal(g["indices"], s.indices)
        assert torch.equal(g["U"], s.U) and torch.equal(g["V"], s.V)
        assert g["U"].dtype == torch.float32 and g["U"].shape[1] == s.k and g["V"].shape[1] == s.k
        assert ("weights" in g) == with_weights
        if with_weights:
            assert torch.equal(g["weights"], s.weights)
    assert meta["selection_rule"] == "fraction=0.25" and meta["score"] == "delta"
    assert meta["base_fingerprint"] == "base" and meta["expert_fingerprint"] == "expert"
    assert meta["palora_version"] == __version__ and meta["store_vectors"] == "true"


def test_subspace_indices_only(tmp_path):
    subs = subspaces(with_weights=False)
    path = tmp_path / "subspace.safetensors"
    save_subspace(path, subs, "base", "expert", "topk=4", "delta", store_vectors=False)
    grouped, meta = load_subspace(path, "base")
    assert meta["store_vectors"] == "false"
    for name, s in subs.items():
        assert set(grouped[name]) == {"indices"} and torch.equal(grouped[name]["indices"], s.indices)


# ----------------------------------------------------------------------------- refusals


def test_mismatched_fingerprint_is_refused_clearly(tmp_path):
    path = tmp_path / "svf_expert.safetensors"
    save_svf_expert(path, svf_expert_state(), "t2", "aaaa", "bbbb")
    with pytest.raises(FingerprintError) as e:
        load_svf_expert(path, "cccc")
    msg = str(e.value)
    assert str(path) in msg and "aaaa" in msg and "cccc" in msg and "\n" not in msg
    assert isinstance(e.value, ArtifactError)

    sub_path = tmp_path / "subspace.safetensors"
    save_subspace(sub_path, subspaces(), "aaaa", "bbbb", "topk=4", "delta")
    with pytest.raises(FingerprintError, match="subspace"):
        load_subspace(sub_path, "cccc")


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_svf_expert(tmp_path / "nope.safetensors", None)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "svf_expert.safetensors"
    save_svf_expert(path, svf_expert_state(), "linear", "a", "b")
    data = path.read_bytes()
    for cut in (len(data) // 2, 4):
        path.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match="not a readable safetensors"):
            load_svf_expert(path, None)


def test_pickle_is_refused(tmp_path):
    path = tmp_path / "svf_expert.safetensors"
    torch.save({"model.layers.0.mlp.up_proj.z": torch.ones(3)}, path)
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_svf_expert(path, None)
    with pytest.raises(ArtifactError):
        load_subspace(path, None)


# ----------------------------------------------------------------------------- adapters


def test_stamp_and_check_adapter(tmp_path):
    model = make_tiny_model("gpt2")
    targets = find_targets(model)
    torch.manual_seed(0)
    peft_model = add_lora(model, targets, 4, 8.0)
    peft_model.save_pretrained(tmp_path)
    before, _ = read_safetensors(tmp_path / ADAPTER_WEIGHTS, "adapter")

    stamp_adapter(tmp_path, "basefp", "expertfp", "palora")
    after, meta = read_safetensors(tmp_path / ADAPTER_WEIGHTS, "adapter")
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert {"base_fingerprint": "basefp", "expert_fingerprint": "expertfp", "palora_method": "palora",
            "palora_version": __version__}.items() <= meta.items()
    with safe_open(str(tmp_path / ADAPTER_WEIGHTS), framework="pt") as f:
        assert f.metadata().get("format") == "pt"  # peft's own header entry survives

    assert check_adapter(tmp_path, "expertfp")["palora_method"] == "palora"
    with pytest.raises(FingerprintError, match="expertfp"):
        check_adapter(tmp_path, "other")
    with pytest.raises(ArtifactError, match="does not exist"):
        check_adapter(tmp_path / "missing", "expertfp")


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_path_file(tmp_path):
    final = tmp_path / "sub" / "report.json"
    with atomic_path(final) as tmp:
        assert tmp != final and not final.exists()
        tmp.write_text("1")
    assert final.read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("2")
            raise RuntimeError("boom")
    assert final.read_text() == "1"  # the old file is untouched
    assert sorted(p.name for p in final.parent.iterdir()) == ["report.json"]


def test_atomic_folder_has_the_permissions_of_mkdir(tmp_path):
    previous = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "model", is_dir=True) as tmp:
            (tmp / "config.json").write_text("{}")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(previous)
    mode = (tmp_path / "model").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o750


def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path):
    for is_dir in (False, True):
        final = tmp_path / ("model" if is_dir else "x.safetensors")
        with pytest.raises(ValueError):
            with atomic_path(final, is_dir=is_dir) as tmp:
                if is_dir:
                    tmp.mkdir(exist_ok=True)
                    (tmp / "config.json").write_text("{}")
                else:
                    tmp.write_bytes(b"half")
                raise ValueError("interrupted")
        assert not final.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_path_directory_replaces_the_old_one(tmp_path):
    final = tmp_path / "expert_model"
    for text in ("old", "new"):
        with atomic_path(final, is_dir=True) as tmp:
            (tmp / text).write_text(text)
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert os.listdir(tmp_path) == ["expert_model"]


def test_run_dir_paths(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.svf_expert == tmp_path / "svf_expert.safetensors"
    assert rd.subspace == tmp_path / "subspace.safetensors"
    assert rd.adapter("palora") == tmp_path / "methods" / "palora" / "adapter"
    assert rd.merged_model("lora") == tmp_path / "methods" / "lora" / "merged_model"
    with pytest.raises(AttributeError):
        rd.nonsense  # noqa: B018


# ----------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_fingerprint(family):
    a, b = make_tiny_model(family, seed=0), make_tiny_model(family, seed=0)
    fa = fingerprint(find_targets(a))
    assert fa == fingerprint(find_targets(b)) and len(fa) == 16
    assert fa != fingerprint(find_targets(make_tiny_model(family, seed=1)))
    t = find_targets(b)[-1]
    with torch.no_grad():
        t.module.weight.view(-1)[7] += 1e-6  # one element, one ulp-sized change
    assert fingerprint(find_targets(b)) != fa
    # weights outside the targets do not count
    c = make_tiny_model(family, seed=0)
    with torch.no_grad():
        c.get_input_embeddings().weight.add_(1.0)
    assert fingerprint(find_targets(c)) == fa
