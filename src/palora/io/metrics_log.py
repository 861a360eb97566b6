"""Training curves: ``metrics.jsonl`` always, TensorBoard and Weights & Biases when asked.

One record per log step of a stage, ``{"stage", "step", "loss", "lr", "grad_norm", "time_s"}``,
is one JSON line of ``<run>/metrics.jsonl``. With ``log.report_to`` the scalars
``<stage>/loss``, ``<stage>/lr`` and ``<stage>/grad_norm`` (``inject:palora`` written
``inject/palora``) also go, at the stage's step, to accelerate's tracker classes:

- ``tensorboard``: one TensorBoard run per stage, ``<run>/tensorboard/<stage>/``;
- ``wandb``: one W&B run per stage in project ``log.project``, grouped under ``log.run_name``
  (default: the run directory's name), with the resolved configuration as its config.

A stage that starts at step ``t`` (1, or a checkpoint's step + 1) first forgets what an earlier,
interrupted attempt logged from step ``t`` on: its JSON lines are dropped and TensorBoard purges
those steps (``purge_step``), so no step is logged twice. Only the main process opens a log.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from ..config import LogConfig
from ..errors import ConfigError, install_hint
from .artifacts import RunDir

#: the scalars of a record sent to the trackers
SCALARS = ("loss", "lr", "grad_norm")


def require_tracker(name: str) -> None:
    """Refuse, in one line naming the extra to install, a tracker whose package is missing."""
    if importlib.util.find_spec(name) is None:  # tensorboard, wandb: the import name is the tracker's
        raise ConfigError(f"log.report_to: {name} is not installed: {install_hint(name)}")


def scalar_prefix(stage: str) -> str:
    """``inject:palora`` -> ``inject/palora``; other characters TensorBoard refuses become ``_``."""
    return re.sub(r"[^-\w./]", "_", stage.replace(":", "/"))


class MetricsLog:
    """Where the training loop writes its records: ``start(stage, step)``, ``write(record)``...,
    ``finish()``, once per stage. Creating one checks that the asked trackers are installed."""

    def __init__(self, root: str | Path, cfg: LogConfig | None = None, hparams: dict[str, Any] | None = None):
        self.rd = RunDir(root)
        self.cfg = cfg or LogConfig()
        self.hparams = hparams  # the W&B run's config
        self.run_name = self.cfg.run_name or self.rd.root.resolve().name
        for name in self.cfg.report_to:
            require_tracker(name)
        self._file = None
        self._trackers: list[Any] = []
        self._prefix = ""

    def start(self, stage: str, step: int = 1) -> None:
        """Open the sinks for ``stage``, which continues from ``step``: what was logged from there on is dropped."""
        self.finish()
        self.rd.root.mkdir(parents=True, exist_ok=True)
        drop_logged_from(self.rd.metrics, stage, step)
        self._file = open(self.rd.metrics, "a", encoding="utf-8")  # noqa: SIM115 - open until finish()
        self._prefix = scalar_prefix(stage)
        try:
            for name in self.cfg.report_to:
                tracker = self._tracker(name, stage, step)
                tracker.start()
                self._trackers.append(tracker)
        except BaseException:
            self.finish()
            raise

    def _tracker(self, name: str, stage: str, step: int) -> Any:
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        if name == "tensorboard":  # accelerate writes into logging_dir/run_name
            folder = self.rd.tensorboard(stage)
            # purge_step: TensorBoard hides what this folder already holds from `step` on
            return TensorBoardTracker(folder.name, folder.parent, purge_step=step)
        # accelerate's WandBTracker passes its first argument to wandb.init as the project
        return WandBTracker(self.cfg.project, name=f"{self.run_name}/{stage}", group=self.run_name,
                            job_type=stage, config=self.hparams)

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line, flushed, and the record's scalars at its step to every tracker."""
        if self._file is None:
            raise RuntimeError("MetricsLog.write before start")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        values = {f"{self._prefix}/{k}": float(record[k]) for k in SCALARS if record.get(k) is not None}
        for tracker in self._trackers:
            tracker.log(values, step=record["step"])

    def finish(self) -> None:
        """Close the JSONL file and end the trackers' runs (nothing happens when none is open)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        trackers, self._trackers = self._trackers, []
        for tracker in trackers:
            tracker.finish()


def drop_logged_from(path: Path, stage: str, step: int) -> None:
    """Remove the lines of ``stage`` at step ``step`` or later (an earlier attempt's; they come again)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if not (record.get("stage") == stage and record.get("step", 0) >= step):
            kept.append(line)
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    tmp.replace(path)
