"""The ``palora`` command line: one verb per stage (:mod:`palora.commands`), all sharing one run directory.

Configuration comes through one path (:func:`palora.config.resolve`): defaults, then
``--config FILE.yaml`` (the verb's shipped config, or for a stage verb the run directory's
``config.yaml``, when no file is given), then ``--set key=value``, then the verb's flags. The
resolved configuration is saved as ``<out>/config.yaml``. Errors in the user's input print one
line and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .commands import SHIPPED_CONFIGS, VERBS, Verb
from .config import RunConfig, resolve, save
from .errors import PaloraError
from .methods.registry import table


def config_path(name: str) -> Path:
    """``--config`` value: a YAML file, or the name of a shipped config (``llama-3.1-8b``)."""
    path = Path(name)
    shipped = SHIPPED_CONFIGS / f"{name}.yaml"
    if not path.exists() and path.name == name and shipped.is_file():
        return shipped
    return path


def _choices(tp: Any) -> tuple | None:
    """The allowed values of a ``Literal`` annotation (also inside ``X | None``)."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    for arg in typing.get_args(tp):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


def config_keys_help(cfg: Any, prefix: str = "", sections: tuple[str, ...] = (), allowed: bool = False) -> list[str]:
    """One entry per configuration key of ``cfg``'s top-level ``sections`` (all when empty): ``key =
    value`` and its help line, with the allowed values of a choice when ``allowed``."""
    lines = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            if not sections or f.name in sections:
                lines += config_keys_help(value, f"{prefix}{f.name}.", allowed=allowed)
            continue
        choices = _choices(hints[f.name]) if allowed else None
        one_of = f"\n      one of: {', '.join(map(str, choices))}" if choices else ""
        lines.append(f"  {prefix}{f.name} = {value!r}\n      {f.metadata.get('help', '')}{one_of}")
    return lines


def _defaults(verb: Verb) -> RunConfig:
    """The settings a verb starts from: its shipped config's, else the defaults."""
    return resolve(SHIPPED_CONFIGS / f"{verb.config}.yaml") if verb.config else RunConfig()


def _epilog(verb: Verb) -> str:
    shown = "the keys of the sections it reads" if verb.sections else "every key"
    start = f"palora/configs/{verb.config}.yaml's values" if verb.config else "the defaults"
    keys = "\n".join(config_keys_help(_defaults(verb), sections=verb.sections))
    return (f"example:\n  {verb.example}\n\nmethods:\n{table()}\n\nconfiguration ({shown}, with {start}; --set "
            f"key=value, or the same keys in --config FILE.yaml; `palora config` lists every key and its allowed "
            f"values):\n{keys}")


def show_config(cfg: RunConfig, progress: bool = True) -> str:
    """``palora config``: every key with its value (the defaults, or those of --config / --set), its
    help and its allowed values."""
    return "configuration keys (--set key=value, or the same keys in --config FILE.yaml):\n" + "\n".join(
        config_keys_help(cfg, allowed=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palora",
        description="palora: teach a causal LM new facts with LoRA kept off what a skill relies on. PALoRA "
        "(arXiv 2605.24549, the `palora` method) protects the singular components an SVF expert's probe picks; "
        "`act-protect` (the default) protects the skill's input-covariance directions, which kept the skill on "
        "SmolLM2 where the spectral probe did not (docs/results.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Stages share one run directory: `palora svf`, `palora probe`, `palora inject`, `palora eval` can "
        "be rerun alone.\n\nmethods:\n" + table() + "\n\nexample:\n  " + VERBS["run"].example,
    )
    parser.add_argument("--version", action="version", version=f"palora {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    shipped = ", ".join(sorted(c.stem for c in SHIPPED_CONFIGS.glob("*.yaml")))
    for verb in VERBS.values():
        p = sub.add_parser(verb.name, help=verb.help, description=verb.help, epilog=_epilog(verb),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for flag in verb.flags:
            key, metavar, h = verb.flag(flag)
            p.add_argument(flag, dest=key, metavar=metavar, help=f"{h} [{key}]", type=int if flag == "--seed" else str)
        default = f" (default: {verb.config})" if verb.config else ""
        p.add_argument("--config", metavar="FILE",
                       help=f"YAML file with configuration keys, or a shipped config: {shipped}{default}")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one configuration key (repeatable), e.g. --set inject.rank=8")
        p.add_argument("--overwrite", action="store_true",
                       help="when --out holds a run made with other settings, redo the stages they change "
                       "(default: refuse). The same command on the same --out resumes: finished stages are "
                       "skipped, a killed one continues from its last checkpoint")
        p.add_argument("--quiet", action="store_true", help="no progress bars and no training lines (metrics.jsonl "
                       "still has every step), nothing of lm-eval's on the console")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def configure(args: argparse.Namespace) -> RunConfig:
    verb = VERBS[args.verb]
    flags = {key: getattr(args, key, None) for key in (verb.flag(f)[0] for f in verb.flags)}
    flags["out"] = flags.get("out") or verb.out
    config_file = config_path(args.config) if args.config else None
    if verb.demo_data == "always" or (verb.demo_data == "with the shipped config" and config_file is None):
        from .stages.data import data_files, keep_override  # the demo's data sets, written into <out>/data/

        flags.update(data_files(Path(flags["out"]) / "data"))
        if verb.keep_data:  # before the user's --set, which may undo it
            args.overrides = [keep_override(Path(flags["out"]) / "data"), *args.overrides]
    if config_file is None and verb.config:
        config_file = SHIPPED_CONFIGS / f"{verb.config}.yaml"
    elif config_file is None and verb.continues:  # continue the run found in --out (or the default one)
        existing = Path(flags.get("out") or RunConfig().out) / "config.yaml"
        config_file = existing if existing.is_file() else None
    return resolve(config_file, args.overrides, flags)


def _quiet_libraries() -> None:
    """Our own progress bars and log lines only: no per-file bars or advice from transformers, and
    not the deprecation peft 0.21 triggers in transformers on every LoRA wrap (nothing a user can change)."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _restore(rd: Any, previous: bytes | None) -> None:
    """Put back the ``config.yaml`` a refused command replaced (or remove the one it created)."""
    if previous is None:
        rd.config.unlink(missing_ok=True)
        return
    tmp = rd.config.with_name(f".{rd.config.name}.restore")
    tmp.write_bytes(previous)
    tmp.replace(rd.config)


def _run(verb: Verb, args: argparse.Namespace, cfg: RunConfig, rd: Any, main_process: bool) -> None:
    """Open the run directory (refusing another run's), save the configuration, run the verb; a
    refused command leaves the directory's ``config.yaml`` as it was."""
    from .stages.opening import open_run
    from .training.distributed import barrier

    previous = rd.config.read_bytes() if rd.config.is_file() else None  # the config before this command
    wrote = False
    try:
        open_run(rd, cfg, overwrite=args.overwrite, writer=main_process)  # refuses another run's directory
        if main_process:
            save(cfg, rd.config, omit=verb.omits)
            wrote = True
        barrier()
        result = verb.run(cfg, rd, progress=not args.quiet)
        if verb.prints is not None and main_process:
            print(verb.prints(result, rd))
    except PaloraError:
        if wrote:
            _restore(rd, previous)
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verb = VERBS[args.verb]
    try:
        cfg = configure(args)
        if not verb.run_dir:
            print(verb.run(cfg, progress=not args.quiet))
            return 0
        _quiet_libraries()
        from .io.artifacts import RunDir
        from .stages.opening import locked
        from .training.distributed import is_main

        rd = RunDir(cfg.out)
        main_process = is_main()
        created = not rd.root.exists()
        try:
            with locked(rd, main_process):  # one command at a time per run directory
                _run(verb, args, cfg, rd, main_process)
        finally:
            if main_process and created and rd.root.is_dir() and not any(rd.root.iterdir()):
                rd.root.rmdir()  # a refused command leaves no empty directory behind
        return 0
    except PaloraError as e:
        if args.debug:
            raise
        print(f"palora {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"palora {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
