"""Target discovery per family, overrides, refusals, and the W (out x in) view of Conv1D."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from palora.core.targets import Target, find_targets, set_weight_matrix, weight_matrix
from palora.errors import ModelError
from tiny import FAMILIES, HIDDEN, INTERMEDIATE, LAYERS, make_tiny_model

MLP_NAMES = {
    "llama": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "mistral": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "qwen2": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "gemma": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "gpt2": ("mlp.c_fc", "mlp.c_proj"),
    "gpt_neox": ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    "opt": ("fc1", "fc2"),
    "phi": ("mlp.fc1", "mlp.fc2"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_default_targets(family):
    model = make_tiny_model(family)
    targets = find_targets(model)
    suffixes = MLP_NAMES[family]
    assert len(targets) == LAYERS * len(suffixes)
    assert len({t.name for t in targets}) == len(targets)
    for t in targets:
        assert any(t.name.endswith("." + s) for s in suffixes), t.name
        assert t.module is model.get_submodule(t.name)
        assert t.transposed == (family == "gpt2") == isinstance(t.module, Conv1D)
        assert set(t.shape) == {HIDDEN, INTERMEDIATE}
        assert weight_matrix(t.module).shape == t.shape
    for s in suffixes:
        assert sum(t.name.endswith("." + s) for t in targets) == LAYERS


def test_gpt2_attention_projection_is_not_a_target():
    model = make_tiny_model("gpt2")
    names = [t.name for t in find_targets(model)]
    assert "transformer.h.0.attn.c_proj" in dict(model.named_modules())
    assert not any(".attn." in n for n in names)
    assert "transformer.h.0.mlp.c_proj" in names


@pytest.mark.parametrize(
    "family, override, expected",
    [
        ("llama", ["up_proj"], ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]),
        ("llama", ["q_proj", "down_proj"], ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                            "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"]),
        ("gpt2", ["c_proj"], ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj",
                              "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"]),
        ("gpt2", ["mlp.c_proj"], ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]),
        ("opt", ["fc2"], ["model.decoder.layers.0.fc2", "model.decoder.layers.1.fc2"]),
    ],
)
def test_target_modules_override(family, override, expected):
    assert [t.name for t in find_targets(make_tiny_model(family), override)] == expected


def test_override_matches_whole_components_only():
    with pytest.raises(ModelError, match="no target modules"):
        find_targets(make_tiny_model("llama"), ["proj"])  # a substring of up_proj, not a component


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.norm = nn.LayerNorm(8)


def test_unknown_family_without_match_names_the_model_class():
    with pytest.raises(ModelError) as e:
        find_targets(Custom())
    msg = str(e.value)
    assert "Custom" in msg and "gate_proj" in msg and "target_modules" in msg and "\n" not in msg
    assert [t.name for t in find_targets(Custom(), ["0", "2"])] == ["encoder.0", "encoder.2"]


def test_target_that_is_not_linear_is_refused():
    with pytest.raises(ModelError, match="LayerNorm"):
        find_targets(Custom(), ["norm"])


def test_weight_matrix_orientation_on_conv1d():
    torch.manual_seed(0)
    conv = Conv1D(nf=INTERMEDIATE, nx=HIDDEN)  # in 64 -> out 96, weight stored (64, 96)
    nn.init.normal_(conv.bias)
    assert conv.weight.shape == (HIDDEN, INTERMEDIATE)
    t = Target("c_fc", conv)
    assert t.transposed and t.shape == (INTERMEDIATE, HIDDEN)
    x = torch.randn(5, HIDDEN)
    W = weight_matrix(conv)
    assert W.shape == (INTERMEDIATE, HIDDEN)
    assert W.data_ptr() == conv.weight.data_ptr()  # a view, no copy
    torch.testing.assert_close(conv(x), x @ W.T + conv.bias)

    W2 = torch.randn(INTERMEDIATE, HIDDEN, dtype=torch.float64)
    set_weight_matrix(conv, W2)
    assert conv.weight.dtype == torch.float32 and conv.weight.shape == (HIDDEN, INTERMEDIATE)
    torch.testing.assert_close(conv(x), x @ W2.float().T + conv.bias)
    torch.testing.assert_close(weight_matrix(conv), W2.float())


def test_weight_matrix_on_linear():
    lin = nn.Linear(HIDDEN, INTERMEDIATE)
    t = Target("fc", lin)
    assert not t.transposed and t.shape == (INTERMEDIATE, HIDDEN)
    assert weight_matrix(lin) is lin.weight
    W2 = torch.randn(INTERMEDIATE, HIDDEN)
    set_weight_matrix(lin, W2)
    assert torch.equal(lin.weight, W2)


def test_an_unknown_model_type_is_recognised_by_its_module_structure():
    """A family palora has no entry for, built like Llama, gets Llama's MLP; like nothing, a refusal."""
    model = make_tiny_model("llama")
    expected = [t.name for t in find_targets(model)]
    model.config.model_type = "llama_like_newcomer"
    assert [t.name for t in find_targets(model)] == expected
    with pytest.raises(ModelError) as e:
        find_targets(Custom())
    assert "model.target_modules=[0,2]" in str(e.value)  # the model's own linear layers, not another family's


def test_no_match_suggests_the_models_own_linear_layers():
    with pytest.raises(ModelError) as e:
        find_targets(make_tiny_model("llama"), ["nothing_here"])
    msg = str(e.value)
    assert "nothing_here" in msg and "fc1" not in msg and "q_proj" in msg and "\n" not in msg
