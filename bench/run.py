"""PALoRA against its baselines: ``python bench/run.py --device cpu|cuda --out FILE.json``.

Every row is a ratio measured in one process (baseline and ours in turns, after a warm-up, the
median of several repetitions) or, for peak memory on the CPU, in one fresh process per method.
Prints the table and writes ``{"rows": [{"name", "ours", "baseline", "ratio", "target", "unit",
"device", "ok", "note", ...}], "machine": {...}, "command": ...}``. docs/benchmarks.md describes
each row and records the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from table import format_table, write_rows

PACKAGED = "smollm2-135m-instruct"


def machine(device: str) -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], required=True, help="which rows: cpu (a whole small model) "
                   "or cuda (8B-shaped layers and models, random weights)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--quick", action="store_true", help="a smoke test: few repetitions, small batches")
    p.add_argument("--model", default=PACKAGED, help="CPU rows: packaged name, local folder or hub id")
    p.add_argument("--demo-run", help="a finished `palora demo --out DIR` run, for the demo_wall_time row")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--protect-every", type=int, default=8, help="CPU rows: PALoRA protects every N-th singular "
                   "component (k = r/N); 8 is the 8B anchor's 512 of 4096, 2 the demo's probe fraction")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    if args.device == "cpu":
        from model_rows import cpu_rows

        rows = cpu_rows(args.model, args.quick, args.threads, args.demo_run, log, args.protect_every)
    else:
        from gpu_rows import gpu_rows

        rows = gpu_rows(args.quick, log)
    print(format_table(rows))
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    write_rows(Path(args.out), rows, machine=machine(args.device), command=command, quick=args.quick,
               wall_time_s=round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
