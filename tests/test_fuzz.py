"""Generated inputs (hypothesis): JSONL data files and YAML configurations either load or are refused
with palora's one-line errors, never with another exception, and a refused command leaves no file.

The quick profile runs here on every test run; the long one (``-m fuzz_long``) generates over
10,000 cases: 4,000 data files, 4,000 configurations read, 2,000 configurations given to the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palora.cli import main
from palora.config import RunConfig, resolve
from palora.errors import PaloraError
from palora.io.data import load_eval, load_train, tokenize_train
from test_data import TEMPLATE
from tiny_tokenizer import make_tiny_tokenizer

QUICK, LONG = {"jsonl": 150, "yaml": 150, "cli": 40}, {"jsonl": 4000, "yaml": 4000, "cli": 2000}
SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])

# JSON values, and objects whose keys are mostly the ones palora reads
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                     st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_KEYS = ["text", "prompt", "completion", "answer", "aliases", "messages", "role", "content"]
_turn = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "system", "bot", 3]),
                                            "content": st.one_of(st.text(max_size=8), _scalars)})
_record = st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=6)),
                          st.one_of(_json, st.lists(_turn, max_size=3)), max_size=4)
_text = st.text(min_size=1, max_size=10)
_answer = st.one_of(st.integers(-99, 99).map(str), st.integers(-99, 99), _text)
_chat = st.lists(st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["system", "user"]), _text),
                 min_size=1, max_size=2)
_valid = st.one_of(  # lines of the accepted forms, valid or nearly (the loaders' happy path too)
    st.builds(lambda t: {"text": t}, _text),
    st.builds(lambda p, c: {"prompt": p, "completion": c}, _text, _text),
    st.builds(lambda p, a: {"prompt": p, "answer": a}, _text, _answer),
    st.builds(lambda p, a, al: {"prompt": p, "answer": a, "aliases": al}, _text, _answer, st.lists(_text, max_size=2)),
    st.builds(lambda turns, a: {"messages": [*turns, {"role": "assistant", "content": a}]}, _chat, _text),
    st.builds(lambda turns, a: {"prompt": turns, "completion": [{"role": "assistant", "content": a}]}, _chat, _text),
    st.builds(lambda turns, a: {"prompt": turns, "answer": a}, _chat, _answer),
)
_line = st.one_of(_valid.map(json.dumps), _valid.map(json.dumps), _record.map(json.dumps), _json.map(json.dumps),
                  st.binary(max_size=24).map(lambda b: b.decode("latin-1")), st.text(max_size=24), st.just(""))


def _config_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        value = getattr(cls(), f.name)
        keys += _config_keys(type(value), f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]
    return keys


_DOTTED = _config_keys()
_choice_values = st.sampled_from(["linear", "t2", "fraction", "global", "topk", "energy", "threshold", "palora",
                                  "act-protect", "lora", "nope", "numeric", "exact", "float32", "none", "fsdp2"])
_value = st.one_of(_scalars, _choice_values, st.lists(st.one_of(_scalars, _choice_values), max_size=3))


def _tree(pairs: list[tuple[str, object]]) -> dict:
    tree: dict = {}
    for dotted, value in pairs:
        node = tree
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[last] = value
    return tree


_config = st.lists(st.tuples(st.one_of(st.sampled_from(_DOTTED), st.text(string.ascii_lowercase + ".", max_size=12)),
                             _value), max_size=6).map(_tree)
_yaml_text = st.one_of(_config.map(lambda t: yaml.safe_dump(t, sort_keys=False)), st.text(max_size=40))


_TOKENIZER = make_tiny_tokenizer()
_TOKENIZER.chat_template = TEMPLATE


def _jsonl_case(lines: list[str], max_length: int) -> None:
    """Every loader, and the tokenisation of what loads (chat template included), loads or refuses."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.jsonl"
        path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape"))
        steps = (lambda p: tokenize_train(load_train(p), _TOKENIZER, max_length, chat_template=True),
                 lambda p: load_eval(p, "numeric"), lambda p: load_eval(p, "contains"))
        for step in steps:
            try:
                step(path)
            except PaloraError as e:
                assert "\n" not in str(e) and str(e)


def _yaml_case(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            assert isinstance(resolve(path), RunConfig)
        except PaloraError as e:
            assert "\n" not in str(e) and str(e)


def _cli_case(text: str, capsys) -> None:
    """``palora eval`` on a generated config, in a fresh folder: refused in one line (there is no
    run to evaluate, or the config is bad), and nothing left behind."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.yaml").write_text(text, encoding="utf-8", errors="surrogateescape")
        out = Path(d) / "run"
        assert main(["eval", "--config", str(Path(d) / "c.yaml"), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("palora eval: error: ") and "Traceback" not in err
        assert sorted(p.name for p in Path(d).iterdir()) == ["c.yaml"]


def _make(profile: dict[str, int]) -> tuple:
    @settings(max_examples=profile["jsonl"], **SETTINGS)
    @given(lines=st.lists(_line, min_size=0, max_size=5), max_length=st.integers(1, 64))
    def jsonl(lines, max_length):
        _jsonl_case(lines, max_length)

    @settings(max_examples=profile["yaml"], **SETTINGS)
    @given(text=_yaml_text)
    def config(text):
        _yaml_case(text)

    @settings(max_examples=profile["cli"], **SETTINGS)
    @given(text=_yaml_text)
    def cli(capsys, text):
        _cli_case(text, capsys)

    return jsonl, config, cli


test_jsonl_files_load_or_are_refused, test_configs_load_or_are_refused, test_cli_refuses_and_leaves_nothing = _make(QUICK)
test_jsonl_files_long, test_configs_long, test_cli_long = (pytest.mark.fuzz_long(f) for f in _make(LONG))
