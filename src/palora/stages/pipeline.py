"""``palora run`` and ``palora demo``: every stage into one run directory, then the evaluation.

``run``: svf → the probes the methods read → inject (each method) → eval. ``demo``: the same on
the embedded default, after writing the demo's data sets into ``<out>/data/`` (the ``data``
stage); the configuration already points there (``palora/configs/demo.yaml``, chosen on the
validation splits).
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, require
from ..errors import ArtifactError, DataError
from ..evaluation import EvalSet
from ..io.artifacts import ADAPTER_FILES, RunDir
from ..io.chat import completion_text_of
from ..io.data import TrainExample, format_prompt, load_train
from ..io.models import load_tokenizer, resolve_model_path
from ..protection import other_run_data
from ..replay import check_replay
from ..training.distributed import barrier, is_main
from . import data
from .engine import record, skip_if_done
from .evaluate import load_eval_sets, run_eval
from .inject import run_inject
from .probe import bases, run_probe
from .svf import run_svf


def check_inputs(cfg: RunConfig, progress: bool = True) -> None:
    """Read and check every input file of every stage ``palora run`` runs, before the first starts
    (``FILE:LINE`` errors): a bad file is refused in a second, not after hours of training."""
    files = [require(cfg.data.skill_train, "data.skill_train", "--skill-train"),
             require(cfg.data.knowledge_train, "data.knowledge_train", "--knowledge-train"), *cfg.probe.skill_data,
             *cfg.probe.keep_data]
    check_replay(cfg, cfg.inject.methods)
    training = {path: load_train(path) for path in files}
    for run in cfg.probe.extra_runs:
        other_run_data(run)
    if cfg.inject.protect_adapter:
        missing = [f for f in ADAPTER_FILES if not (Path(cfg.inject.protect_adapter) / f).is_file()]
        if missing:
            raise ArtifactError(f"inject.protect_adapter={cfg.inject.protect_adapter}: no {missing[0]} (a peft "
                                "adapter folder, methods/<method>/adapter of an earlier run)")
    sets, _ = load_eval_sets(cfg, progress)
    _check_conversations(cfg, training, sets)


def _check_conversations(cfg: RunConfig, training: dict[str, list[TrainExample]], sets: dict[str, EvalSet]) -> None:
    """Conversational lines are rendered once by the model's chat template: a tokenizer without one,
    or a template that refuses some turns (roles that must alternate), is named with the line."""
    chats = [(path, ex) for path, examples in training.items() for ex in examples if isinstance(ex.prompt, tuple)]
    questions = [ex for examples, _ in sets.values() for ex in examples if isinstance(ex.prompt, tuple)]
    if not chats and not questions:
        return
    tok = load_tokenizer(resolve_model_path(cfg.model.name), trust_remote_code=cfg.model.trust_remote_code)
    for path, ex in chats:
        try:
            completion_text_of(tok, ex.prompt, ex.completion)
        except DataError as e:
            raise DataError(f"{path}:{ex.line}: {e}") from None
    for ex in questions:
        format_prompt(tok, ex.prompt, cfg.data.chat_template)


def run_all(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    check_inputs(cfg, progress)
    run_svf(cfg, rd, progress)
    if bases(cfg):
        run_probe(cfg, rd, progress)
    run_inject(cfg, rd, progress)
    return run_eval(cfg, rd, progress)


def run_demo(cfg: RunConfig, rd: RunDir, progress: bool = True) -> list[dict]:
    data.check_skill_checker(cfg)
    if skip_if_done(rd, cfg, data.STAGE) is None and is_main():
        info = data.run_data(cfg, RunDir(rd.data), progress)
        record(rd, cfg, data.STAGE, {"wall_time_s": info["wall_time_s"]})
    barrier()
    return run_all(cfg, rd, progress)
