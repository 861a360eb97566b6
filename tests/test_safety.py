"""Safety invariants of the library's source and loaders: no pickle is ever loaded, no code from
a file or a model repository runs unless the user asks, and data never names the files we open.

The source checks read ``src/palora`` with :mod:`ast` (calls and imports, not substrings), and each
is shown to catch a planted violation, so that an empty result means something.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import pathlib
from pathlib import Path

import pytest
import transformers
import yaml

import palora
from palora.config import ModelConfig, RunConfig
from palora.io.data import load_eval, load_train
from palora.io.models import load_model, load_model_and_tokenizer
from tiny import make_tiny_model, save_tiny_checkpoint
from tiny_tokenizer import make_tiny_tokenizer

SRC = Path(palora.__file__).parent
SOURCES = sorted(SRC.rglob("*.py"))

#: modules that unpickle (or run) what they read
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
#: yaml functions that build arbitrary Python objects
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def module_name(path: Path) -> str:
    return "palora." + ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a chain of attributes on a name ("" for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(tree: ast.AST, module: str | None = None) -> list[str]:
    """Pickle imports, ``torch.load`` without ``weights_only=True``, ``eval``/``exec``, unsafe YAML loads.

    ``module``: the importable name of the source, to check that a ``yaml.load`` Loader is a SafeLoader.
    """
    found = []
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where}: from {node.module} import ...")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append(f"{where}: from torch import load")
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in ("eval", "exec"):
                found.append(f"{where}: {name}()")
            elif name == "torch.load" and not is_true(keyword(node, "weights_only")):
                found.append(f"{where}: torch.load without weights_only=True")
            elif name in {f"yaml.{f}" for f in UNSAFE_YAML}:
                found.append(f"{where}: {name}")
            elif name in ("yaml.load", "yaml.load_all"):
                loader = keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
                cls = getattr(importlib.import_module(module), loader.id, None) if (
                    module and isinstance(loader, ast.Name)) else None
                if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                    found.append(f"{where}: {name} without a SafeLoader")
    return found


def test_the_source_is_scanned():
    assert len(SOURCES) > 20 and SRC / "io" / "models.py" in SOURCES and SRC / "stages" / "evaluate.py" in SOURCES


def test_no_pickle_no_eval_no_unsafe_yaml_in_the_source():
    found = {str(p.relative_to(SRC)): unsafe_calls(ast.parse(p.read_text(encoding="utf-8")), module_name(p))
             for p in SOURCES}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_scan_catches_each_violation():
    planted = """
import pickle
from dill import loads
from torch import load
import torch, yaml
torch.load(f)
torch.load(f, weights_only=False)
torch.load(f, weights_only=True)
eval("1 + 1")
exec("x = 1")
model.eval()
yaml.unsafe_load(text)
yaml.load(text, Loader=yaml.Loader)
"""
    found = unsafe_calls(ast.parse(planted), "palora.config.build")
    assert [f.split(": ", 1)[1] for f in found] == [
        "import pickle", "from dill import ...", "from torch import load", "torch.load without weights_only=True",
        "torch.load without weights_only=True", "eval()", "exec()", "yaml.unsafe_load", "yaml.load without a SafeLoader",
    ]
    assert unsafe_calls(ast.parse("yaml.load(text, Loader=_Loader)"), "palora.config.build") == []


# ----------------------------------------------------------------------------- trust_remote_code, safetensors


def test_trust_remote_code_is_off_by_default():
    assert ModelConfig().trust_remote_code is False
    assert RunConfig().model.trust_remote_code is False


def test_every_auto_from_pretrained_names_trust_remote_code():
    calls = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and dotted(node.func).endswith(".from_pretrained"):
                owner = dotted(node.func).rsplit(".", 1)[0]
                if owner.startswith("Auto"):  # transformers' Auto* classes run a repository's code when allowed
                    calls.append((f"{p.relative_to(SRC)}:{node.lineno}", keyword(node, "trust_remote_code")))
    assert calls and [where for where, value in calls if value is None] == []


def test_every_tokenizer_load_passes_trust_remote_code():
    missing = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and dotted(node.func) == "load_tokenizer" and not keyword(
                    node, "trust_remote_code"):
                missing.append(f"{p.relative_to(SRC)}:{node.lineno}")
    assert missing == []


@pytest.fixture
def recorded(monkeypatch) -> dict[str, list[dict]]:
    """``from_pretrained`` of AutoModelForCausalLM and AutoTokenizer record their keyword arguments
    and return a tiny model and tokenizer (nothing is downloaded)."""
    calls: dict[str, list[dict]] = {"model": [], "tokenizer": []}

    def model(path, *args, **kwargs):
        calls["model"].append({"path": str(path), **kwargs})
        return make_tiny_model("llama", vocab_size=300)

    def tokenizer(path, *args, **kwargs):
        calls["tokenizer"].append({"path": str(path), **kwargs})
        return make_tiny_tokenizer()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    return calls


@pytest.mark.parametrize("trust", [False, True])
def test_hub_ids_are_loaded_from_safetensors_with_the_users_trust_setting(recorded, trust, monkeypatch):
    from palora.io import models

    monkeypatch.setattr(models, "hub_reachable", lambda: True)  # an online machine
    load_model_and_tokenizer(ModelConfig(name="some-org/some-model", trust_remote_code=trust))
    (model,), (tok,) = recorded["model"], recorded["tokenizer"]
    assert model["path"] == tok["path"] == "some-org/some-model"
    assert model["use_safetensors"] is True
    assert model["trust_remote_code"] is trust and tok["trust_remote_code"] is trust


def test_local_folders_are_loaded_from_safetensors(recorded, tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "m")
    load_model(ModelConfig(name=str(folder)))
    (model,) = recorded["model"]
    assert model["path"] == str(folder) and model["use_safetensors"] is True and model["trust_remote_code"] is False


# ----------------------------------------------------------------------------- data never names a file we open

DATA = SRC / "io" / "data.py"
#: calls that read, write or inspect a file through a path object
FILE_METHODS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "is_file", "is_dir", "exists",
                "stat", "iterdir", "glob", "rglob", "unlink", "mkdir"}


def file_accesses(func: ast.FunctionDef) -> list[ast.expr]:
    """The path expressions ``func`` opens, inspects, wraps in ``Path()`` or hands to ``_read_records``."""
    paths = []
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        if name in ("open", "Path", "_read_records") and node.args:
            paths.append(node.args[0])
        elif isinstance(node.func, ast.Attribute) and node.func.attr in FILE_METHODS:
            paths.append(node.func.value)
    return paths


def foreign_paths(tree: ast.AST) -> list[str]:
    """File accesses on anything but a parameter of the function (or a name rebound to ``Path(<it>)``)."""
    found = []
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        params = {a.arg for a in func.args.args + func.args.kwonlyargs}
        rebinds = {t.id: node.value for node in ast.walk(func) if isinstance(node, ast.Assign)
                   for t in node.targets if isinstance(t, ast.Name)}
        for expr in file_accesses(func):
            value = rebinds.get(expr.id) if isinstance(expr, ast.Name) else None
            ok = isinstance(expr, ast.Name) and expr.id in params and (value is None or (
                isinstance(value, ast.Call) and dotted(value.func) == "Path"
                and [ast.unparse(a) for a in value.args] == [expr.id]))
            if not ok:
                found.append(f"{func.name}:{expr.lineno}: {ast.unparse(expr)}")
    return found


def test_data_opens_only_the_paths_it_is_given():
    """Every file access in data.py is on a parameter of its function: no value read from a file becomes a path."""
    tree = ast.parse(DATA.read_text(encoding="utf-8"))
    assert len([e for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for e in file_accesses(f)]) >= 4
    assert foreign_paths(tree) == []


def test_the_path_check_catches_a_path_from_the_data():
    planted = """
def f(path):
    for obj in read_jsonl(path):
        open(obj["file"])
def g(path):
    path = Path(row)
    path.read_text()
def h(path):
    Path(path).open()
"""
    assert [x.split(":")[0] for x in foreign_paths(ast.parse(planted))] == ["f", "g", "g", "h"]


def test_a_path_inside_the_data_is_only_text(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read", encoding="utf-8")
    train = tmp_path / "train.jsonl"
    train.write_text(f'{{"text": "{secret}"}}\n{{"prompt": "{secret}", "completion": "{secret}"}}\n', encoding="utf-8")
    evals = tmp_path / "eval.jsonl"
    evals.write_text(f'{{"prompt": "{secret}", "answer": "{secret}", "aliases": ["{secret}"]}}\n', encoding="utf-8")

    opened: list[str] = []
    path_open, builtin_open = pathlib.Path.open, builtins.open
    monkeypatch.setattr(pathlib.Path, "open", lambda self, *a, **k: opened.append(str(self)) or path_open(self, *a, **k))
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or builtin_open(f, *a, **k))
    assert load_train(train)[0].completion == str(secret)
    assert load_eval(evals, "exact")[0].aliases == (str(secret),)
    assert opened == [str(train), str(evals)]
