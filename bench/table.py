"""One benchmark result (a row) and how rows are printed and written.

A row compares ``ours`` with ``baseline`` (both in ``unit``); ``ratio = ours / baseline`` and
``ok`` says whether the row meets its ``target`` (None when the row has no target or was not
measured). JSON: ``{"rows": [{"name", "ours", "baseline", "ratio", "target", "unit", "device",
"ok", "note", ...}], ...}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    name: str
    ours: float | None
    baseline: float | None
    target: str | None  # human-readable, e.g. "<= 1.05"; None: reported, no target
    unit: str  # unit of ours and baseline (the ratio has none)
    device: str
    ok: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ours": self.ours, "baseline": self.baseline, "ratio": self.ratio,
                "target": self.target, "unit": self.unit, "device": self.device, "ok": self.ok,
                "note": self.note, **self.extra}


def ratio_row(name: str, ours: float, baseline: float, limit: float | None, unit: str, device: str,
              note: str = "", **extra: Any) -> Row:
    """A row whose target is ``ours / baseline <= limit`` (no target when ``limit`` is None)."""
    row = Row(name, ours, baseline, None if limit is None else f"<= {limit:g}", unit, device, note=note, extra=extra)
    if limit is not None and row.ratio is not None:
        row.ok = row.ratio <= limit
    return row


#: Python objects per adapted matrix that the memory model leaves out (peft's modules, the class
#: torch.nn.utils.parametrize generates per parametrised module): about 35 KB for LoRA, 90 KB for PALoRA
OBJECT_ALLOWANCE = 100_000


def memory_model_row(name: str, measured: int, predicted: int, device: str, note: str, targets: int = 1) -> Row:
    """Measured bytes against bench/memory_model.py's (shown in MB): within 10 %, plus
    :data:`OBJECT_ALLOWANCE` per target on the CPU (CUDA counts tensors alone, exactly). Judged
    when the prediction is large enough to stand out of a process's noise (8 MB), always on CUDA."""
    row = Row(name, measured / 1e6, predicted / 1e6, "within 10 % of the model", "MB", device, note=note)
    if row.ratio is not None and (device == "cuda" or predicted >= 8e6):
        allowance = 0 if device == "cuda" else OBJECT_ALLOWANCE * targets
        row.ok = abs(measured - predicted) <= 0.10 * predicted + allowance
    return row


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.3e}"


def format_table(rows: list[Row]) -> str:
    """A plain-text table, one line per row (note on the line below when there is one)."""
    head = ("name", "device", "ours", "baseline", "unit", "ratio", "target", "ok")
    body = [(r.name, r.device, _fmt(r.ours), _fmt(r.baseline), r.unit, _fmt(r.ratio), r.target or "-",
             {True: "yes", False: "NO", None: "-"}[r.ok]) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    for r, cells in zip(rows, body):
        lines.append("  ".join(x.ljust(w) for x, w in zip(cells, widths)).rstrip())
        if r.note:
            lines.append(f"    {r.note}")
    return "\n".join(lines)


def write_rows(path: str | Path, rows: list[Row], **meta: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": [r.to_json() for r in rows], **meta}, indent=2) + "\n", encoding="utf-8")
