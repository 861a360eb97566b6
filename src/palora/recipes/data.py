"""``palora data``: write the demo's data sets (and their manifest) into the run directory."""

from __future__ import annotations

import time

from ..artifacts import RunDir
from ..config import RunConfig
from ..datasets import SKILL_TASKS, write_demo_data
from ..errors import ConfigError
from ..models import load_model_and_tokenizer


def run_data(cfg: RunConfig, rd: RunDir, progress: bool = True) -> dict:
    """Known facts are filtered with ``cfg.model``, prompted as the evaluation will prompt them."""
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer(cfg.model)
    files = write_demo_data(rd.root, cfg.data_gen, model=model, tokenizer=tok, batch_size=cfg.eval.batch_size,
                            chat_template=cfg.data.chat_template, progress=progress)
    return {"files": {k: str(v) for k, v in files.items()}, "wall_time_s": round(time.perf_counter() - start, 2)}


def check_skill_checker(cfg: RunConfig) -> None:
    """The generated skill data are scored by their task's checker: refuse another one (one line),
    e.g. a spelling task left on the default numeric checker."""
    task = SKILL_TASKS.get(cfg.data_gen.skill_task)
    if task is not None and task.checker != cfg.data.skill_checker:
        raise ConfigError(f"data_gen.skill_task={cfg.data_gen.skill_task} is checked by {task.checker!r}, "
                          f"data.skill_checker is {cfg.data.skill_checker!r}: add --set data.skill_checker={task.checker}")
