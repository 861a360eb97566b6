"""JSONL data files in the conventions of TRL, their tokenisation and a resumable batch order.

Training files (both stages), one JSON object a line:

- ``{"text": t}``: language modelling, the loss is on every token of ``t``;
- ``{"prompt": p, "completion": c}``: the loss is on the completion only;
- TRL's conversational forms, rendered by the tokenizer's chat template (:mod:`palora.io.chat`):
  ``{"messages": [turn, ...]}`` (the loss on the last, assistant turn) and ``{"prompt": [turn,
  ...], "completion": [turn]}``.

Evaluation files: ``{"prompt": p, "answer": a}`` with optional ``"aliases": [a1, a2, ...]``
(``p`` a string or a list of turns); the model generates greedily from ``p`` and a named checker
(:mod:`palora.core.checkers`) compares the output with ``a`` and its aliases.

Extra keys are allowed and ignored, blank lines are skipped. Every problem raises
:class:`~palora.errors.DataError` with a one-line message ``FILE:LINE: what is wrong``.

A tokenised training example is the concatenation ``[prompt ids] + [completion ids] + [eos]``
with ``labels = [-100] * len(prompt ids) + [completion ids] + [eos]``: the two parts are
tokenised separately so that the mask boundary is exact (no BPE merge crosses it).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..core.checkers import check_reference
from ..errors import DataError, ModelError
from .chat import Conversation, completion_text, completion_text_of, parse_turns, render, split_messages

IGNORE_INDEX = -100  # label of a token that carries no loss (torch.nn.CrossEntropyLoss default)

T = TypeVar("T")


#: a prompt: a string, or conversational turns rendered by the chat template
Prompt = str | Conversation


@dataclass(frozen=True)
class TrainExample:
    """One training sequence; ``prompt == ""`` means loss on every token (a ``{"text"}`` line)."""

    prompt: Prompt
    completion: str
    line: int = field(default=0, compare=False)  # its line in the file, for messages


@dataclass(frozen=True)
class EvalExample:
    """One evaluation question: the model answers ``prompt``, a checker compares with ``answer``."""

    prompt: Prompt
    answer: str
    aliases: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Reading files


def _read_records(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(1-based line number, object)`` for every non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a directory)" if path.is_dir() else ""))
    records: list[tuple[int, dict[str, Any]]] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                # utf-8-sig on the first line drops a byte-order mark some editors write.
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                where = f"byte {e.start + 1} of the line"
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({where})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {_json_type(obj)}")
            records.append((lineno, obj))
    if not records:
        raise DataError(f"{path}: no examples (the file is empty)")
    return records


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file, one per non-blank line; refuses an empty or malformed file."""
    return [obj for _, obj in _read_records(path)]


def _field(path: Path | str, lineno: int, obj: dict[str, Any], key: str) -> str:
    """``obj[key]`` that must be a string."""
    if key not in obj:
        raise DataError(f"{path}:{lineno}: missing key {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"{path}:{lineno}: {key!r} must be a string, got {_json_type(value)}")
    return value


def _prompt(path: Path | str, lineno: int, obj: dict[str, Any]) -> Prompt:
    """``obj["prompt"]``: a string, or a list of turns (conversational)."""
    if isinstance(obj.get("prompt"), list):
        return parse_turns(path, lineno, "prompt", obj["prompt"])
    return _field(path, lineno, obj, "prompt")


def load_train(path: str | Path) -> list[TrainExample]:
    """Training examples: each line has ``"text"``, ``"messages"``, or both ``"prompt"`` and ``"completion"``."""
    examples: list[TrainExample] = []
    for lineno, obj in _read_records(path):
        forms = [f for f, present in (("'text'", "text" in obj), ("'messages'", "messages" in obj),
                                      ("'prompt'/'completion'", "prompt" in obj or "completion" in obj)) if present]
        if len(forms) > 1:
            raise DataError(f"{path}:{lineno}: has {'both ' if len(forms) == 2 else ''}{' and '.join(forms)}; "
                            "use one form")
        if not forms:
            raise DataError(f"{path}:{lineno}: expected 'text', 'messages', or 'prompt' and 'completion'")
        if "text" in obj:
            examples.append(TrainExample("", _field(path, lineno, obj, "text"), lineno))
        elif "messages" in obj:
            examples.append(TrainExample(*split_messages(path, lineno, obj["messages"]), lineno))
        else:
            prompt = _prompt(path, lineno, obj)
            if isinstance(obj.get("completion"), list):
                examples.append(TrainExample(prompt, completion_text(path, lineno, obj["completion"]), lineno))
            else:
                examples.append(TrainExample(prompt, _field(path, lineno, obj, "completion"), lineno))
    return examples


def load_eval(path: str | Path, checker: str | None = None) -> list[EvalExample]:
    """Evaluation examples: ``"prompt"`` (str), ``"answer"`` (str or number), ``"aliases"`` (list of str).

    With ``checker`` named, every answer and alias must be one that checker can compare with
    (a number for ``numeric``): a set that would silently score 0 is refused at its line.
    """
    examples: list[EvalExample] = []
    for lineno, obj in _read_records(path):
        prompt = _prompt(path, lineno, obj)
        if "answer" not in obj:
            raise DataError(f"{path}:{lineno}: missing key 'answer'")
        answer = obj["answer"]
        # bool is a subclass of int but `true` is no answer to check against.
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str):
            got = _json_type(answer)
            raise DataError(f"{path}:{lineno}: 'answer' must be a string or a number, got {got}")
        aliases = obj.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise DataError(f"{path}:{lineno}: 'aliases' must be a list of strings")
        if checker is not None:
            try:
                check_reference(checker, answer, aliases)
            except DataError as e:
                raise DataError(f"{path}:{lineno}: {e}") from None
        examples.append(EvalExample(prompt, answer, tuple(aliases)))
    return examples


# ---------------------------------------------------------------------------------------------
# Tokenisation


def _adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text, add_special_tokens=True)`` puts the bos token in front."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("", add_special_tokens=True)["input_ids"][:1] == [bos]


def format_prompt(tokenizer: Any, prompt: Prompt, chat_template: bool) -> str:
    """``prompt`` as one user turn of the chat template (when asked and the tokenizer has one), or
    conversational turns as the chat template renders them (always).

    The result is meant to be tokenised with ``add_special_tokens=True`` (as :func:`tokenize_train`
    and :func:`palora.evaluation.generate` do); a template that writes the bos token itself
    would then get it twice, so that leading bos text is dropped when the tokenizer adds one.
    """
    if isinstance(prompt, tuple):
        text = render(tokenizer, prompt)
    elif not (chat_template and getattr(tokenizer, "chat_template", None)):
        return prompt
    else:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos) :]
    return text


def tokenize_train(
    examples: Sequence[TrainExample], tokenizer: Any, max_length: int, chat_template: bool
) -> list[dict[str, list[int]]]:
    """``{"input_ids", "labels"}`` per example, prompt masked with -100, cut to ``max_length``.

    ``input_ids = P + C + [eos]`` and ``labels = [-100] * |P| + C + [eos]`` where
    ``P = tokenizer(format_prompt(prompt), add_special_tokens=True)`` (just the bos, if any, for a
    ``text`` example, whose text is never templated) and ``C = tokenizer(completion,
    add_special_tokens=False)``. A conversational example's completion is its assistant turn as the
    chat template writes it (:func:`palora.io.chat.completion_text_of`), and gets no second eos when
    the template ended it with one. Both are cut from the right to ``max_length``; an example left
    with no labelled token is dropped, and a DataError is raised if none is left.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelError("the tokenizer has no eos token; training needs one to end completions")
    prompts = [format_prompt(tokenizer, ex.prompt, chat_template) if ex.prompt else "" for ex in examples]
    completions = [completion_text_of(tokenizer, ex.prompt, ex.completion) if isinstance(ex.prompt, tuple)
                   else ex.completion for ex in examples]
    # Batched calls: the fast tokenizer encodes a list in parallel.
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    items: list[dict[str, list[int]]] = []
    for ex, p, c in zip(examples, prompt_ids, completion_ids):
        ended = isinstance(ex.prompt, tuple) and eos in c  # the chat template ended the turn with eos itself
        target = list(c) if ended else list(c) + [eos]
        input_ids = (list(p) + target)[:max_length]
        labels = ([IGNORE_INDEX] * len(p) + target)[:max_length]
        if any(label != IGNORE_INDEX for label in labels):
            items.append({"input_ids": input_ids, "labels": labels})
    if not items:
        raise DataError(
            f"no training example keeps a completion token within max_length={max_length}; "
            "raise data.max_length or shorten the prompts"
        )
    return items


@dataclass
class TrainCollator:
    """Right-pads tokenised examples into ``input_ids``, ``attention_mask``, ``labels`` of (B, T).

    Padding positions have ``attention_mask = 0`` and ``labels = -100`` (no loss).
    """

    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        shape = (len(items), length)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = torch.tensor(item["input_ids"], dtype=torch.long)
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.tensor(item["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ---------------------------------------------------------------------------------------------
# Batch order


def batches(items: Sequence[T], batch_size: int, seed: int, start_step: int = 0) -> Iterator[list[T]]:
    """An endless, deterministic stream of batches, from batch ``start_step`` on.

    The items are laid out as one long stream of epochs, epoch ``e`` being the permutation
    ``random.Random(seed + e).shuffle(range(N))``; batch ``s`` holds stream positions
    ``[s * batch_size, (s + 1) * batch_size)``. A batch may span two epochs, so every batch is
    full (even when ``N < batch_size``). Batch ``s`` depends on ``(seed, s)`` alone, hence
    ``batches(x, b, seed, start_step=k)`` yields exactly what ``batches(x, b, seed)`` yields after
    its first ``k`` batches, without drawing them: a resumed run sees the same data.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    n = len(items)
    if n == 0:
        raise DataError("no examples to draw batches from")

    def permutation(epoch: int) -> list[int]:
        order = list(range(n))
        random.Random(seed + epoch).shuffle(order)
        return order

    epoch, offset = divmod(start_step * batch_size, n)
    order = permutation(epoch)
    while True:
        batch: list[T] = []
        while len(batch) < batch_size:
            if offset == n:
                epoch, offset = epoch + 1, 0
                order = permutation(epoch)
            take = min(batch_size - len(batch), n - offset)
            batch.extend(items[i] for i in order[offset : offset + take])
            offset += take
        yield batch
