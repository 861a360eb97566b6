"""lm-evaluation-harness scores for the models of a run (``palora eval --lm-eval TASKS``).

Each model the evaluation has already loaded (base, expert, every injected method) goes to
lm-eval's Hugging Face class as an object, ``HFLM(pretrained=model, tokenizer=tokenizer)``, and
through ``lm_eval.simple_evaluate``: no weights are read twice and nothing is downloaded but the
tasks' data sets. The scores land in ``report.json`` as
``"lm_eval": {"<model>": {"<task>": {"<metric>,<filter>": value, ...}}}`` with lm-eval's own
metric names (``exact_match,strict-match``, ``acc,none``, ``acc_stderr,none``).

lm-eval is an optional dependency (palora's ``eval`` extra), imported here alone and
only when a run names tasks. Custom tasks are YAML files in ``eval.lm_eval_include_path``
(``examples/lm_eval_task/`` is one, readable offline).
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, PaloraError, install_hint, one_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..config import EvalConfig



@dataclass(frozen=True)
class LmEvalTasks:
    """The tasks of a run, found and tried once (names, data sets, code execution) before any model runs."""

    names: list[str]
    manager: Any  # lm_eval.tasks.TaskManager
    cfg: EvalConfig
    version: str


def _import_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise PaloraError(f"eval.lm_eval_tasks needs lm-evaluation-harness: {install_hint('eval')}") from None
    return lm_eval


def _task_manager(names: list[str], include_path: str | None) -> Any:
    """A TaskManager that knows every name: the include path alone when it holds them all (the
    built-in index of thousands of YAML files takes seconds to build), else both."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise ConfigError(f"eval.lm_eval_include_path={include_path!r}: not a folder of task YAML files")
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local
    manager = TaskManager(include_path=include_path)
    for n in names:
        if n not in manager.all_tasks:
            close = difflib.get_close_matches(n, manager.all_tasks, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; custom task YAMLs go in eval.lm_eval_include_path"
            raise ConfigError(f"eval.lm_eval_tasks: unknown lm-eval task {n!r}{hint}")
    return manager


def load_tasks(cfg: EvalConfig, progress: bool = True) -> LmEvalTasks:
    """Find the tasks and load their data sets, so that a wrong name, a data set that cannot be
    reached or an unconfirmed code-executing task fails before the first model runs.

    lm-eval logs errors only, unless ``LMEVAL_LOG_LEVEL`` (lm-eval's own variable) says otherwise.
    """
    assert cfg.lm_eval_tasks, "load_tasks needs eval.lm_eval_tasks"
    lm_eval = _import_lm_eval()
    if "LMEVAL_LOG_LEVEL" not in os.environ:  # its warnings on a model passed as an object are expected here
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if not progress:
        import datasets

        datasets.disable_progress_bars()
    names = list(cfg.lm_eval_tasks)
    manager = _task_manager(names, cfg.lm_eval_include_path)
    try:
        loaded = manager.load(names)
    except Exception as e:  # noqa: BLE001 - a task's own code and data: any failure is the task's, said in one line
        raise PaloraError(f"lm-eval tasks {','.join(names)} could not be loaded: {one_line(e)}") from None
    unsafe = sorted(n for n, task in loaded["tasks"].items() if getattr(task, "UNSAFE_CODE", False))
    if unsafe and not cfg.lm_eval_unsafe_code:
        raise ConfigError(
            f"lm-eval task {', '.join(unsafe)} executes the model's generated code: set "
            "eval.lm_eval_unsafe_code=true to allow it (only on a machine where that is safe)"
        )
    if cfg.lm_eval_unsafe_code:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # HF evaluate's code_eval metric asks for it too
    return LmEvalTasks(names=names, manager=manager, cfg=cfg, version=lm_eval.__version__)


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    """lm-eval's ``{"alias": ..., "acc,none": 0.5, "acc_stderr,none": "N/A"}`` -> the numbers.

    lm-eval names every metric ``<metric>,<filter>``; stderrs it did not compute are ``"N/A"``.
    """
    return {k: float(v) for k, v in result.items()
            if "," in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null while the block runs: what lm-eval's subprocesses print there
    (``git describe``'s "fatal: not a git repository") stays off a quiet console."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def score(tasks: LmEvalTasks, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
          quiet: bool = False) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of ``model`` on every task (groups included, as lm-eval reports them);
    ``quiet``: nothing of lm-eval's on stderr (its errors still raise)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    c = tasks.cfg
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=c.lm_eval_batch_size)
    with _stderr_silenced() if quiet else nullcontext():
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks.names,
            task_manager=tasks.manager,
            limit=c.lm_eval_limit,
            num_fewshot=c.lm_eval_num_fewshot,
            apply_chat_template=c.lm_eval_chat_template,
            confirm_run_unsafe_code=c.lm_eval_unsafe_code,
            log_samples=False,
        )
    return {task: _metrics(result) for task, result in out["results"].items()}
