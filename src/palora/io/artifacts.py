"""The run directory's files: names, atomic writes, and fingerprint-checked loads.

Layout (docs/design.md, "Contracts")::

    config.yaml  stages.json  svf_expert.safetensors  expert_model/
    subspace.safetensors  probe_stats.json                          (the singular probe)
    subspace-activation.safetensors  probe_stats-activation.json    (the activation probe)
    methods/<method>/adapter/  methods/<method>/merged_model/
    report.json  report.md  README.md (model card)  metrics.jsonl  evaluations/  plots/  tensorboard/ (when asked)

``svf_expert.safetensors`` holds ``<name>.z`` and ``<name>.sigma``; ``subspace.safetensors`` holds
``<name>.indices`` (int64), ``<name>.U`` (m x k), ``<name>.V`` (n x k) and, for the soft projector,
``<name>.weights``. Both carry ``base_fingerprint`` and ``palora_version`` in their header, and
the adapter's safetensors header carries the fingerprints of the base and of the expert it was
trained on. Loads never unpickle anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import __version__
from ..core.subspace import Subspace
from ..errors import ArtifactError, FingerprintError, one_line


class _File:
    """A fixed file or folder of a run directory: ``rd.<attribute>`` is ``rd.root / name``."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, rd: RunDir, owner: type) -> Path:
        return rd.root / self.name


class RunDir:
    """Paths of one run directory (creates nothing)."""

    config = _File("config.yaml")
    svf_expert = _File("svf_expert.safetensors")
    expert_model = _File("expert_model")
    report_json = _File("report.json")
    report_md = _File("report.md")
    model_card = _File("README.md")  # what was trained on what, the numbers, how to load it (Hugging Face model card)
    metrics = _File("metrics.jsonl")
    stages = _File("stages.json")
    plots = _File("plots")
    evaluations = _File("evaluations")
    data = _File("data")  # the demo's data sets (``palora demo`` writes them here)

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def subspace(self) -> Path:
        """The singular probe's subspace (the paper's; ``palora``, its variants, the ablations)."""
        return self.subspace_file("singular")

    def subspace_file(self, basis: str) -> Path:
        """``subspace.safetensors`` (singular components) or ``subspace-<basis>.safetensors``."""
        return self.root / ("subspace.safetensors" if basis == "singular" else f"subspace-{basis}.safetensors")

    @property
    def probe_stats(self) -> Path:
        return self.probe_stats_file("singular")

    def probe_stats_file(self, basis: str) -> Path:
        """``probe_stats.json`` (singular components) or ``probe_stats-<basis>.json``."""
        return self.root / ("probe_stats.json" if basis == "singular" else f"probe_stats-{basis}.json")

    def method(self, name: str) -> Path:
        return self.root / "methods" / name

    def adapter(self, name: str) -> Path:
        return self.method(name) / "adapter"

    def merged_model(self, name: str) -> Path:
        return self.method(name) / "merged_model"

    def snapshot(self, name: str, step: int) -> Path:
        """The adapter of ``name`` as trained to ``step`` (``inject.snapshot_every``)."""
        return self.method(name) / "snapshots" / f"step-{step:06d}"

    def snapshot_steps(self, name: str) -> list[int]:
        """The steps of ``name``'s snapshots on disk, in order (none: ``[]``)."""
        folder = self.method(name) / "snapshots"
        found = [p.name.removeprefix("step-") for p in folder.glob("step-*")] if folder.is_dir() else []
        return sorted(int(s) for s in found if s.isdigit())

    def tensorboard(self, stage: str) -> Path:
        """TensorBoard event files of ``stage``, one TensorBoard run per stage (``log.report_to``)."""
        return self.root / "tensorboard" / stage.replace(":", "-")

    def checkpoint(self, stage: str) -> Path:
        """The training checkpoint of ``stage`` (``svf``, ``inject:<method>``)."""
        return self.root / "checkpoints" / stage.replace(":", "-")


# ----------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)  # reading it means setting it: set it back at once
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(final: str | Path, is_dir: bool = False):
    """Yield a temporary path next to ``final``; move it into place only if the block succeeds.

    A folder gets the permissions of one made by ``mkdir`` under the process's umask, not the
    owner-only ones of the temporary folder it was written in (run folders may be shared)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    target = tmp if is_dir else tmp / final.name
    try:
        yield target
        if is_dir and target.is_dir():
            os.chmod(target, 0o777 & ~_umask())
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


#: how the files ``torch.save`` and ``pickle.dump`` write begin (a zip archive, a pickle of protocol 2-5)
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def read_safetensors(
    path: str | Path, what: str, written_by: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the header metadata of a safetensors file, with one-line errors.

    ``written_by``: the verb whose stage writes the file, named when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        todo = f"run `palora {written_by}` first" if written_by else "run the stage that writes it first"
        raise ArtifactError(f"{what} {path} does not exist ({todo})")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        why = "it is a pickle (torch.save), which palora never loads" if _looks_pickled(path) else one_line(e)
        raise ArtifactError(f"{what} {path} is not a readable safetensors file ({why})") from None
    return tensors, meta


def _looks_pickled(path: Path) -> bool:
    """Whether the file begins like one ``torch.save`` or ``pickle.dump`` writes (read, never unpickled)."""
    try:
        with path.open("rb") as f:
            return f.read(4).startswith(_PICKLE_MAGIC)
    except OSError:
        return False


def _check_fingerprint(
    meta: dict[str, str], key: str, expected: str, what: str, path: Path, written_by: str
) -> None:
    """``meta[key]`` must be ``expected``; ``written_by`` is the verb that makes the file again."""
    found = meta.get(key)
    if found is None:
        raise ArtifactError(f"{what} {path} has no {key} in its header: it was not written by palora")
    if found != expected:
        raise FingerprintError(
            f"{what} {path} was made for other weights ({key} {found}, this model has {expected}): "
            f"use the model it was made with, or run `palora {written_by}` again"
        )


# ----------------------------------------------------------------------------- SVF expert


def save_svf_expert(
    path: str | Path, state: dict[str, torch.Tensor], parametrization: str, base_fingerprint: str,
    expert_fingerprint: str,
) -> None:
    """``expert_fingerprint`` is that of the merged expert (``expert_model/``) the later stages use."""
    meta = {"parametrization": parametrization, "base_fingerprint": base_fingerprint,
            "expert_fingerprint": expert_fingerprint, "palora_version": __version__}
    _save_tensors(Path(path), state, meta)


def load_svf_expert(path: str | Path, base_fingerprint: str | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state, metadata)``; with ``base_fingerprint`` given, a mismatch raises FingerprintError."""
    tensors, meta = read_safetensors(path, "SVF expert", written_by="svf")
    if base_fingerprint is not None:
        _check_fingerprint(meta, "base_fingerprint", base_fingerprint, "SVF expert", Path(path), "svf")
    return tensors, meta


# ----------------------------------------------------------------------------- subspace


def save_subspace(
    path: str | Path, subspaces: dict[str, Subspace], base_fingerprint: str, expert_fingerprint: str,
    rule: str, score: str, store_vectors: bool = True, basis: str = "singular",
    experts: list[dict[str, str]] | None = None, combine: str | None = None,
) -> None:
    """``basis="activation"`` subspaces are not singular components of W: their vectors are always stored.

    ``experts`` (a combined probe): one record per expert that went in (its run, fingerprints,
    skill data), kept as JSON in the header under ``experts``, with the rule that united them
    under ``combine``.
    """
    store_vectors = store_vectors or basis != "singular"
    tensors: dict[str, torch.Tensor] = {}
    for name, s in subspaces.items():
        tensors[f"{name}.indices"] = s.indices
        if store_vectors:
            tensors[f"{name}.U"] = s.U
            tensors[f"{name}.V"] = s.V
        if s.weights is not None:
            tensors[f"{name}.weights"] = s.weights
    meta = {
        "base_fingerprint": base_fingerprint,
        "expert_fingerprint": expert_fingerprint,
        "palora_version": __version__,
        "selection_rule": rule,
        "score": score,
        "basis": basis,
        "store_vectors": str(store_vectors).lower(),
    }
    if experts is not None:
        meta.update(experts=json.dumps(experts), combine=combine or "union")
    _save_tensors(Path(path), tensors, meta)


def load_subspace(path: str | Path, base_fingerprint: str | None) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    """``({name: {"indices", "U"?, "V"?, "weights"?}}, metadata)``, fingerprint checked."""
    tensors, meta = read_safetensors(path, "subspace", written_by="probe")
    if base_fingerprint is not None:
        _check_fingerprint(meta, "base_fingerprint", base_fingerprint, "subspace", Path(path), "probe")
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        name, _, field = key.rpartition(".")
        grouped.setdefault(name, {})[field] = t
    return grouped, meta


# ----------------------------------------------------------------------------- adapters

ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: the files of a peft adapter folder that define it
ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS)


def stamp_adapter(adapter_dir: str | Path, base_fingerprint: str, expert_fingerprint: str, method: str) -> None:
    """Add the fingerprints to the header of a peft adapter's safetensors file (tensors unchanged)."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    tensors, meta = read_safetensors(path, "adapter")
    meta.update({"base_fingerprint": base_fingerprint, "expert_fingerprint": expert_fingerprint,
                 "palora_method": method, "palora_version": __version__})
    _save_tensors(path, tensors, meta)


def check_adapter(adapter_dir: str | Path, expert_fingerprint: str) -> dict[str, str]:
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    _, meta = read_safetensors(path, "adapter", written_by="inject")
    _check_fingerprint(meta, "expert_fingerprint", expert_fingerprint, "adapter", path, "inject")
    return meta
