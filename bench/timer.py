"""Wall-clock timing of several methods in turns, in one process.

Each repetition times every method once, in an order that rotates from one repetition to the
next, so that a slow spell of the machine (another process, a clock change) falls on every
method alike. A sample is the mean over ``inner`` back-to-back calls, timed between two device
synchronisations (CUDA runs asynchronously). Reported: the median sample.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict[str, Callable[[], object]], device: torch.device, reps: int, warmup: int = 1,
              inner: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function: ``reps`` samples each, after ``warmup`` untimed rounds."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                fns[name]()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner)
    return samples


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def relative_spread(xs: list[float]) -> float:
    """Half the interquartile range over the median: the noise of one method's samples."""
    if len(xs) < 4:
        return (max(xs) - min(xs)) / 2 / median(xs)
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return (q3 - q1) / 2 / median(xs)
