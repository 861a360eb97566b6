"""Configuration: defaults, YAML < --set < flags, helpful refusals, the resolved file round trip."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from palora.config import RunConfig, TrainConfig, load, parse_override, resolve, save, to_dict
from palora.errors import ConfigError


def test_defaults_resolve():
    cfg = resolve()
    assert cfg == RunConfig()
    assert cfg.model.name == "smollm2-135m-instruct" and cfg.model.dtype == "float32"
    assert cfg.svf.parametrization == "linear" and cfg.svf.train.lr == 1e-2
    assert cfg.inject.methods == ["act-protect", "lora"] and cfg.inject.train.lr == 1e-3  # docs/results.md
    assert cfg.probe.rule == "fraction" and cfg.inject.side == "both"
    assert cfg.eval.limit is None and cfg.model.target_modules is None


def test_every_field_has_help():
    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            value = getattr(cls(), f.name)
            if dataclasses.is_dataclass(value):
                walk(type(value))

    walk(RunConfig)


def test_precedence_yaml_set_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 1,
        "out": "from_yaml",
        "inject": {"rank": 4, "alpha": 8, "train": {"steps": 7}},
        "probe": {"fraction": 0.5},
    }))
    cfg = resolve(path, ["seed=2", "inject.rank=8", "probe.rule=topk"], {"seed": 3, "out": None})
    assert cfg.seed == 3  # flag > --set > yaml
    assert cfg.out == "from_yaml"  # a flag that is not given does not override
    assert cfg.inject.rank == 8  # --set > yaml
    assert cfg.inject.alpha == 8.0 and isinstance(cfg.inject.alpha, float)  # yaml, int accepted as float
    assert cfg.inject.train.steps == 7 and cfg.probe.fraction == 0.5 and cfg.probe.rule == "topk"


def test_partial_section_override_keeps_the_sections_own_defaults():
    # svf.train defaults to lr 1e-2 (TrainConfig's own default is 1e-3): setting another key of
    # svf.train must not silently change the learning rate.
    cfg = resolve(None, ["svf.train.steps=3"])
    assert cfg.svf.train.steps == 3
    assert cfg.svf.train.lr == RunConfig().svf.train.lr == 1e-2


def test_yaml_partial_section_keeps_the_sections_own_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("svf:\n  train:\n    batch_size: 4\n")
    assert resolve(path).svf.train.lr == 1e-2


@pytest.mark.parametrize(
    "override, suggestion",
    [("svf.train.lrr=1", "svf.train.lr"), ("inject.rnak=4", "inject.rank"), ("seeed=1", "seed"),
     ("prob.k=3", "probe")],
)
def test_unknown_key_suggests_the_closest(override, suggestion):
    with pytest.raises(ConfigError, match=rf"did you mean {suggestion}\?"):
        resolve(None, [override])


def test_unknown_key_without_close_match_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid keys: .*rank"):
        resolve(None, ["inject.zzzzzzzz=1"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("inject.rank=abc", "inject.rank"),
        ("seed=1.5", "seed"),
        ("svf.train.lr=fast", "svf.train.lr"),
        ("model.trust_remote_code=maybe", "model.trust_remote_code"),
        ("svf.parametrization=cubic", "svf.parametrization"),
        ("inject.side=left", "inject.side"),
        ("eval.limit=many", "eval.limit"),
        ("probe=3", "probe"),
        ("inject.methods=palora,dora", "inject.methods"),
        ("inject.methods=lora,lora", "inject.methods"),
    ],
)
def test_wrong_type_or_choice_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        resolve(None, [override])
    assert str(e.value).startswith(f"{key}="), str(e.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("svf.train.steps=0", "svf.train.steps"),
        ("inject.train.lr=-1", "inject.train.lr"),
        ("svf.train.warmup_ratio=1", "svf.train.warmup_ratio"),
        ("probe.fraction=1.5", "probe.fraction"),
        ("probe.energy=-0.1", "probe.energy"),
        ("probe.k=-1", "probe.k"),
        ("inject.rank=0", "inject.rank"),
        ("inject.dropout=1", "inject.dropout"),
        ("data.max_length=0", "data.max_length"),
        ("eval.batch_size=0", "eval.batch_size"),
    ],
)
def test_out_of_range_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        resolve(None, [override])
    assert str(e.value).startswith(f"{key}="), str(e.value)


@pytest.mark.parametrize("override", ["eval.limit=0", "eval.limit=-1"])
def test_eval_limit_must_be_positive(override):
    # examples[:-1] would silently drop the last item; examples[:0] fails only after all training
    with pytest.raises(ConfigError, match=r"^eval\.limit="):
        resolve(None, [override])


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        resolve(None, ["seed"])
    with pytest.raises(ConfigError, match="not a section"):
        resolve(None, ["seed=1", "seed.x=2"])
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(bad)
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert resolve(empty) == RunConfig()


def test_scientific_notation_is_a_number(tmp_path):
    # PyYAML follows YAML 1.1, where "1e-3" (no dot) is a string; learning rates are written so.
    assert parse_override("svf.train.lr=1e-3") == ("svf.train.lr", 1e-3)
    assert resolve(None, ["inject.train.lr=3e-4"]).inject.train.lr == 3e-4
    path = tmp_path / "c.yaml"
    path.write_text("svf:\n  train:\n    lr: 2e-3\n")
    assert resolve(path).svf.train.lr == 2e-3


def test_override_values_are_yaml():
    assert parse_override("svf.train.lr=0.001") == ("svf.train.lr", 1e-3)
    assert parse_override("eval.limit=null") == ("eval.limit", None)
    assert parse_override("model.target_modules=[fc1, fc2]") == ("model.target_modules", ["fc1", "fc2"])
    assert parse_override("out=a=b") == ("out", "a=b")
    cfg = resolve(None, ["model.target_modules=[fc1,fc2]", "eval.limit=4", "svf.train.lr=1.0e-3"])
    assert cfg.model.target_modules == ["fc1", "fc2"] and cfg.eval.limit == 4 and cfg.svf.train.lr == 1e-3


def test_methods_from_a_comma_string():
    assert resolve(None, ["inject.methods=lora, palora"]).inject.methods == ["lora", "palora"]
    assert resolve(None, [], {"inject.methods": "palora"}).inject.methods == ["palora"]
    assert resolve(None, ["inject.methods=[lora]"]).inject.methods == ["lora"]
    with pytest.raises(ConfigError, match="inject.methods"):
        resolve(None, ["inject.methods=,"])


def test_save_load_round_trip(tmp_path):
    cfg = resolve(None, ["svf.parametrization=t2", "inject.methods=lora", "model.target_modules=[up_proj]",
                         "eval.limit=5", "probe.rule=energy", "inject.train.lr=0.0003", "seed=9"])
    path = tmp_path / "config.yaml"
    save(cfg, path)
    assert load(path) == cfg
    assert yaml.safe_load(path.read_text()) == to_dict(cfg)
    assert resolve(path) == cfg  # the resolved file is a valid --config


def test_train_config_checks_itself():
    with pytest.raises(ConfigError, match="grad_accum"):
        TrainConfig(grad_accum=0)


def test_a_removed_key_says_what_replaced_it():
    """``probe.basis`` chose the probe of ``palora`` once; now the method names its basis. An old
    run directory's ``config.yaml`` holds ``basis: singular``, what ``palora`` still means: it loads."""
    assert resolve(None, ["probe.basis=singular"]) == RunConfig()
    with pytest.raises(ConfigError) as e:
        resolve(None, ["probe.basis=activation"])
    assert "probe.basis=activation is no longer a setting" in str(e.value) and "act-protect" in str(e.value)
