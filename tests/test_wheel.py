"""The wheel as a user gets it: built from the sources, installed into a fresh virtual environment,
and run from there (not from this checkout's editable install).

The fresh environment gets no copy of torch & co: a ``.pth`` line puts this environment's
site-packages after its own, where the dependencies resolve. Python does not run the ``.pth``
files of a directory added that way, so the editable install's ``__editable__.*.pth`` (which puts
``src/`` on the path) stays invisible. Nothing is downloaded: ``--no-index`` throughout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*argv: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp / "dist", source, cwd=tmp)
    (built,) = (tmp / "dist").glob("palora_llm-*.whl")
    return built


@pytest.mark.wheel
def test_wheel_contents(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = z.read(entry_points).decode()
    assert {"palora/__init__.py", "palora/py.typed", "palora/configs/demo.yaml", "palora/integrations/lm_eval.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "experiments/"))]
    assert "palora = palora.cli:main" in scripts
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert {"demo", "dev", "eval", "logging", "tensorboard", "wandb"} <= extras


@pytest.mark.wheel
def test_wheel_installs_and_runs_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    (site / "_palora_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)

    assert "usage: palora" in run(venv / "bin" / "palora", "--help", cwd=tmp_path)
    out = run(python, "-c", "import sys, importlib.metadata, palora, palora.commands\n"
              "print(palora.__file__); print((palora.commands.SHIPPED_CONFIGS / 'demo.yaml').is_file())\n"
              "print(importlib.metadata.version('palora-llm') == palora.__version__)\n"
              f"print({str(REPO / 'src')!r} in sys.path)", cwd=tmp_path).split()
    assert Path(out[0]).is_relative_to(venv), out
    assert out[1:] == ["True", "True", "False"], out
