"""The house's rooms: the package's imports run only downward, no source file is over 400 lines,
and the files the source cites exist. Read with :mod:`ast` (imports, not substrings); each check is
shown to catch a planted violation, so that an empty result means something."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import palora

SRC = Path(palora.__file__).parent
REPO = SRC.parent.parent
SOURCES = sorted(SRC.rglob("*.py"))

#: the rooms, lowest first: a module may import its own room or a lower one, never a higher one
LEVELS = {
    "palora": 0, "errors": 0,  # the root package only defines __version__ and loads its API lazily
    "core": 1, "datasets": 1,
    "config": 2, "methods": 2,
    "io": 3,
    "training": 4, "evaluation": 4,
    "protection": 5, "injection": 5, "replay": 5,
    "report": 6, "integrations": 6,
    "stages": 7,
    "compare": 8,
    "commands": 9, "cli": 9, "__main__": 9,
}
MAX_LINES = 400


def module_of(path: Path) -> str:
    return ".".join(("palora", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "palora"


def is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split(".")[1:])
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every palora import, ``if TYPE_CHECKING:`` blocks left out."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" for n in ast.walk(node)}
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "palora":  # `from .. import x`: x is a module, or a name of the package
                names = [f"{target}.{a.name}" if is_module(f"{target}.{a.name}") else target for a in node.names]
                found += [(node.lineno, n) for n in (names if node.module is None else [target])]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "palora"]
    return found


def upward(path: Path, text: str | None = None) -> list[str]:
    module = module_of(path)
    tree = ast.parse(text if text is not None else path.read_text(encoding="utf-8"))
    mine = LEVELS[room(module)]
    return [f"{module}:{line} imports {target} ({room(target)} is above {room(module)})"
            for line, target in imports(tree, module, path.name == "__init__.py") if LEVELS[room(target)] > mine]


def test_every_room_has_a_level():
    assert {room(module_of(p)) for p in SOURCES} <= set(LEVELS)


def test_no_import_runs_upward():
    assert [line for p in SOURCES for line in upward(p)] == []


def test_an_upward_import_is_caught():
    core = SRC / "core" / "linalg.py"
    assert upward(core, "from ..stages.engine import digest\n")
    assert upward(core, "def f():\n    from palora.compare import run\n")
    assert not upward(core, "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..config import RunConfig\n")
    assert not upward(SRC / "stages" / "svf.py", "from ..core.svf import add_svf\n")


def test_no_source_file_is_over_the_limit():
    long = {str(p.relative_to(SRC)): n for p in SOURCES if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


#: a file path the source may cite: docs/…, tests/…, examples/…, experiments/…, bench/…, configs/…, or a
#: repository document in capitals (DESIGN.md); a run directory's report.md is no citation
_CITED = re.compile(r"\b((?:docs|tests|examples|experiments|bench|configs)/[\w./-]*\w|[A-Z][A-Z_]+\.md)\b")


def cited(text: str) -> set[str]:
    return {m for m in _CITED.findall(text) if not m.endswith("/")}


def missing_citations(text: str) -> set[str]:
    """Cited files that exist neither in the repository nor in the package (``configs/`` is shipped there)."""
    return {c for c in cited(text) if not (REPO / c).exists() and not (SRC / c).exists()
            and c not in ("README.md",)}  # README.md: a run directory's model card, also the repository's


def test_the_source_cites_files_that_exist():
    found = {str(p.relative_to(SRC)): sorted(m) for p in SOURCES if (m := missing_citations(p.read_text(encoding="utf-8")))}
    assert found == {}


def test_a_missing_citation_is_caught():
    assert missing_citations("see DESIGN.md §2 and docs/nowhere.md") == {"DESIGN.md", "docs/nowhere.md"}
    assert missing_citations("docs/results.md and tests/test_methods.py") == set()


_REFERENCE = re.compile(r":(?:mod|func|class|data|meth|attr):`~?(palora[\w.]*)`")


def dangling(text: str) -> list[str]:
    """The ``:mod:`` / ``:func:`` / ... references to ``palora.*`` in ``text`` that name nothing."""
    import importlib

    out = []
    for name in _REFERENCE.findall(text):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
            if obj is None:
                out.append(name)
            break
        else:
            out.append(name)
    return out


def test_docstring_references_name_what_exists():
    found = {str(p.relative_to(SRC)): d for p in SOURCES if (d := dangling(p.read_text(encoding="utf-8")))}
    assert found == {}
    assert dangling(":func:`palora.linalg.thin_svd` and :mod:`palora.core.linalg`") == ["palora.linalg.thin_svd"]
