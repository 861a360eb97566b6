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
from pathlib import Path
from typing import Any

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


def config_keys_help(cls: type = RunConfig, prefix: str = "", sections: tuple[str, ...] = ()) -> list[str]:
    """One line per configuration key, ``key = default  help``, of the top-level ``sections`` (all when empty)."""
    lines = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            if not sections or f.name in sections:
                lines += config_keys_help(type(value), f"{prefix}{f.name}.")
        else:
            lines.append(f"  {prefix}{f.name} = {value!r}\n      {f.metadata.get('help', '')}")
    return lines


def _epilog(verb: Verb) -> str:
    shown = "the keys of the sections it reads" if verb.sections else "every key"
    keys = "\n".join(config_keys_help(sections=verb.sections))
    return (f"example:\n  {verb.example}\n\nmethods:\n{table()}\n\nconfiguration ({shown}; --set key=value, or the "
            f"same keys in --config FILE.yaml):\n{keys}")


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
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def configure(args: argparse.Namespace) -> RunConfig:
    verb = VERBS[args.verb]
    flags = {key: getattr(args, key, None) for key in (verb.flag(f)[0] for f in verb.flags)}
    flags["out"] = flags.get("out") or verb.out
    config_file = config_path(args.config) if args.config else None
    if verb.demo_data == "always" or (verb.demo_data == "with the shipped config" and config_file is None):
        from .stages.data import data_files  # the demo's data sets, written into <out>/data/

        flags.update(data_files(Path(flags["out"]) / "data"))
    if config_file is None and verb.config:
        config_file = SHIPPED_CONFIGS / f"{verb.config}.yaml"
    elif config_file is None and verb.continues:  # continue the run found in --out (or the default one)
        existing = Path(flags.get("out") or RunConfig().out) / "config.yaml"
        config_file = existing if existing.is_file() else None
    return resolve(config_file, args.overrides, flags)


def _quiet_libraries() -> None:
    """Our own progress bars and log lines only: no per-file bars or advice from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _restore(rd: Any, previous: bytes | None) -> None:
    """Put back the ``config.yaml`` a refused command replaced (or remove the one it created)."""
    if previous is None:
        rd.config.unlink(missing_ok=True)
        if rd.root.is_dir() and not any(rd.root.iterdir()):
            rd.root.rmdir()
        return
    tmp = rd.config.with_name(f".{rd.config.name}.restore")
    tmp.write_bytes(previous)
    tmp.replace(rd.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    verb = VERBS[args.verb]
    previous: bytes | None = None  # the run directory's config.yaml before this command
    rd, wrote = None, False
    try:
        cfg = configure(args)
        from .io.artifacts import RunDir
        from .stages.opening import open_run
        from .training.distributed import barrier, is_main

        rd = RunDir(cfg.out)
        main_process = is_main()
        open_run(rd, cfg, overwrite=args.overwrite, writer=main_process)  # refuses another run's directory
        if main_process:
            previous = rd.config.read_bytes() if rd.config.is_file() else None
            rd.root.mkdir(parents=True, exist_ok=True)
            save(cfg, rd.config)
            wrote = True
        barrier()
        result = verb.run(cfg, rd, progress=not args.quiet)
        if verb.prints is not None and main_process:
            print(verb.prints(result, rd))
        return 0
    except PaloraError as e:
        if wrote:  # a refused command leaves the run directory's config as it was
            _restore(rd, previous)
        if args.debug:
            raise
        print(f"palora {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"palora {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
