"""Before a command writes into a run directory: refuse another run's, or make room for this one.

Every stage recorded in ``stages.json`` is looked up by its key (:func:`stage_of`) and checked
against the new configuration (:func:`palora.stages.engine.done_in`). A stale stage (another
digest, or built on a stale one) makes the command refuse in one line; with ``--overwrite`` exactly
the stale stages are removed (their files, checkpoints, records, metrics lines and TensorBoard
runs) and run again. The temporaries of writes a killed process never finished are always removed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from ..config import RunConfig, load_yaml, to_dict
from ..errors import ConfigError
from ..io.artifacts import RunDir, write_json
from ..io.metrics_log import drop_logged_from
from ..methods.registry import METHODS
from ..training.checkpoint import discard_checkpoint
from ..training.distributed import from_main
from . import data, evaluate, inject, probe, svf
from .engine import Stage, done_in, read_stages


def stage_of(key: str) -> Stage | None:
    """The stage recorded as ``key`` (``None``: not a stage, e.g. a method this palora does not know)."""
    fixed = {s.key: s for s in (data.STAGE, svf.STAGE, evaluate.STAGE)}
    if key in fixed:
        return fixed[key]
    kind, _, arg = key.partition(":")
    if kind == "probe":
        return probe.stage_for(arg or "singular")
    if kind == "inject" and arg in METHODS:
        return inject.stage_for(arg)
    return None


def stale_stages(rd: RunDir, cfg: RunConfig) -> list[str]:
    """Recorded stages that ``cfg`` would compute differently, with everything built on them."""
    stages = read_stages(rd)
    return [k for k in stages if (s := stage_of(k)) is not None and not done_in(stages, cfg, s)]


def discard(rd: RunDir, keys: list[str]) -> None:
    """Remove the stages ``keys``: their files, checkpoints, records, metrics lines and TensorBoard runs."""
    if not keys:
        return
    for key in keys:
        for path in stage_of(key).outputs(rd):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        discard_checkpoint(rd.checkpoint(key))
        drop_logged_from(rd.metrics, key, 1)  # every step of the stage
    stages = {k: v for k, v in read_stages(rd).items() if k not in keys}
    write_json(rd.stages, stages)


#: what atomic_path (tempfile.mkdtemp(prefix=".<name>.")) leaves behind when a process is killed
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}$")


def remove_partial_writes(rd: RunDir) -> None:
    """Delete the temporaries of writes a killed process never finished (never a finished file)."""
    folders = [rd.root, rd.root / "methods", *(rd.root / "methods").glob("*"), rd.evaluations, rd.plots]
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_dir() and _TEMPORARY.match(path.name):
                    shutil.rmtree(path, ignore_errors=True)


def _flat(tree: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(rd: RunDir, cfg: RunConfig) -> list[str]:
    """Configuration keys whose value differs from the run directory's ``config.yaml``."""
    if not rd.config.is_file():
        return []
    try:
        old = _flat(load_yaml(rd.config))
    except Exception:  # an unreadable old config: the stage digests still decide
        return []
    new = _flat(to_dict(cfg))
    return [k for k in new if k in old and old[k] != new[k] and k != "out"]


def open_run(rd: RunDir, cfg: RunConfig, overwrite: bool, writer: bool = True) -> None:
    """Before a command writes anything into ``rd``: refuse another run's directory, or make room.

    Raises :class:`ConfigError` when a finished stage was made with other settings and
    ``overwrite`` is off; with ``overwrite``, removes exactly the stale stages. Always removes the
    temporaries of writes a killed process left behind. Only the ``writer`` (the main process)
    removes anything; every process checks.
    """
    _refuse_a_file(rd)
    stale = stale_stages(rd, cfg)
    if stale and not overwrite:
        keys = changed_keys(rd, cfg)
        what = f" (changed: {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})" if keys else ""
        raise ConfigError(
            f"{rd.root} holds a run made with other settings{what}; its stages {', '.join(stale)} would change: "
            f"use another --out, or --overwrite to redo them"
        )
    if writer:
        discard(rd, stale)
        remove_partial_writes(rd)


LOCK = ".palora.lock"


def _refuse_a_file(rd: RunDir) -> None:
    if rd.root.exists() and not rd.root.is_dir():
        raise ConfigError(f"--out {rd.root} is a file: a run directory is a folder (pass another --out)")


def _acquire(rd: RunDir) -> tuple[int | None, str | None]:
    """``(descriptor, None)`` holding ``<out>/.palora.lock``, or ``(None, why not)``."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): commands are not serialised there
        return None, None
    path = rd.root / LOCK
    try:
        rd.root.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                return None, (f"{rd.root} is in use by another palora command (pid {holder}): wait for it to end, "
                              "or use another --out")
            if path.exists() and os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its holder just removed
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                return fd, None
            os.close(fd)
    except OSError as e:
        return None, f"cannot take the lock {path}: {e.strerror or e}"
    return None, f"cannot take the lock {path}: it kept being replaced"


@contextmanager
def locked(rd: RunDir, main: bool = True) -> Iterator[None]:
    """Hold ``<out>/.palora.lock`` (an exclusive ``flock`` naming this process) while a command runs
    in ``rd``: a second command on the same directory is refused in one line naming the holder, on
    every process of the command (the main process takes the lock and tells the others). The kernel
    drops the lock when the process ends, however it ends; the file goes with a clean exit."""
    _refuse_a_file(rd)
    fd, why = _acquire(rd) if main else (None, None)
    why = from_main(why)
    if why is not None:
        raise ConfigError(why)
    try:
        yield
    finally:
        if fd is not None:
            (rd.root / LOCK).unlink(missing_ok=True)
            os.close(fd)
