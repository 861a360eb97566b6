"""Every shipped configuration parses into the typed configuration, and every accelerate launch
config loads with accelerate's own loader and asks for what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from palora.cli import SHIPPED_CONFIGS, config_path
from palora.config import RunConfig, resolve
from palora.core.targets import find_targets
from tiny import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PALORA_CONFIGS = sorted(SHIPPED_CONFIGS.glob("*.yaml"))
LAUNCH_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_the_shipped_configs_are_there():
    assert {p.stem for p in PALORA_CONFIGS} >= {"demo", "llama-3.1-8b", "mistral-7b"}
    assert {p.stem for p in LAUNCH_CONFIGS} == {"1gpu", "8gpu-ddp", "8gpu-fsdp2"}


@pytest.mark.parametrize("path", PALORA_CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_is_a_valid_run_config(path):
    cfg = resolve(path)
    assert isinstance(cfg, RunConfig)
    # every key of the file is used (no typo hidden by a default): the resolved config holds it
    def check(tree: dict, obj: object, prefix: str = "") -> None:
        for key, value in tree.items():
            assert hasattr(obj, key), f"{prefix}{key}"
            if isinstance(value, dict):
                check(value, getattr(obj, key), f"{prefix}{key}.")
            else:
                assert getattr(obj, key) == value, f"{prefix}{key}"
    check(yaml.safe_load(path.read_text()), cfg)
    assert config_path(path.stem) == path  # `--config llama-3.1-8b` finds it


@pytest.mark.parametrize("name", ["llama-3.1-8b", "mistral-7b"])
def test_paper_configs_target_the_mlp_in_bf16(name):
    cfg = resolve(config_path(name))
    assert cfg.model.dtype == "bfloat16" and cfg.model.target_modules is None  # the family's MLP
    assert not cfg.save_merged
    family = "llama" if name.startswith("llama") else "mistral"
    targets = find_targets(make_tiny_model(family), cfg.model.target_modules)
    assert sorted({t.name.rsplit(".", 1)[1] for t in targets}) == ["down_proj", "gate_proj", "up_proj"]


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_launch_config_loads(path):
    cfg = ClusterConfig.from_yaml_file(str(path))
    expected = {"1gpu": ("NO", 1), "8gpu-ddp": ("MULTI_GPU", 8), "8gpu-fsdp2": ("FSDP", 8)}[path.stem]
    assert (str(cfg.distributed_type).rsplit(".", 1)[-1], cfg.num_processes) == expected
    if path.stem == "8gpu-fsdp2":
        assert cfg.fsdp_config["fsdp_version"] == 2
