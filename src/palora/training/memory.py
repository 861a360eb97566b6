"""Memory in use and its peak since a reset, the same way on CPU and on CUDA (benchmarks, palora compare).

CPU: the process's resident set, ``VmRSS``, and its high-water mark ``VmHWM`` (both from
``/proc/self/status``); writing 5 to ``/proc/self/clear_refs`` resets the mark (Linux >= 4.0).
``resource.getrusage(...).ru_maxrss`` is not used: after ``exec`` it starts from the high-water
mark of the process that spawned it (the kernel carries ``signal->maxrss`` across exec), so a
child of a large parent would report the parent's size. A process measures only itself, so each
method runs in a fresh subprocess. CUDA: ``torch.cuda.memory_allocated`` and
``max_memory_allocated`` (tensors only, not the allocator's cache), reset with
``reset_peak_memory_stats``.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch
from torch import nn


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


class MemProbe:
    def __init__(self, device: torch.device):
        self.device = device
        self.resets = True  # False when the CPU peak cannot be reset (then peaks include setup)

    def current(self) -> int:
        """Bytes in use now."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.memory_allocated(self.device)
        return _status_bytes("VmRSS")

    def reset_peak(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resets = False

    def peak(self) -> int:
        """Highest bytes in use since :meth:`reset_peak`."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return _status_bytes("VmHWM")


@torch.no_grad()
def make_resident(model: nn.Module) -> nn.Module:
    """Copy every parameter into the process's own memory (in place, tied weights stay tied).

    transformers maps safetensors files lazily: a weight's pages would count in the resident set
    only when first read, and be file-backed where a trained or merged copy is not.
    """
    for w in model.parameters():
        w.data = w.data.clone()
    return model
