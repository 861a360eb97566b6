"""TRL's conversational data: turns ``{"role": ..., "content": ...}`` rendered by the tokenizer's chat template.

Accepted in a data line wherever a prompt is (:mod:`palora.io.data`):

- ``{"messages": [turn, ..., {"role": "assistant", ...}]}`` (training): the last turn is the
  completion (the loss is on it alone), every turn before it the prompt;
- ``{"prompt": [turn, ...], "completion": [{"role": "assistant", ...}]}`` (training): TRL's
  conversational prompt-completion;
- ``{"prompt": [turn, ...], "answer": ...}`` (evaluation).

A conversational prompt is rendered with ``add_generation_prompt=True``, so the model answers as
the assistant; the completion is the assistant turns' text, ended by the tokenizer's eos. Plain
string prompts are left as they are (``data.chat_template`` wraps those in one user turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Turn:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


#: a conversational prompt: the turns before the model's answer
Conversation = tuple[Turn, ...]


def parse_turns(path: Path | str, lineno: int, key: str, value: Any) -> Conversation:
    """``value`` as a non-empty list of turns, each ``{"role": one of ROLES, "content": str}``."""
    where = f"{path}:{lineno}: {key!r}"
    if not isinstance(value, list) or not value:
        raise DataError(f"{where} must be a non-empty list of {{'role', 'content'}} turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or turn.get("role") not in ROLES:
            raise DataError(f"{where}[{i}] must be {{'role': {'|'.join(ROLES)}, 'content': a string}}")
        turns.append(Turn(turn["role"], turn["content"]))
    return tuple(turns)


def split_messages(path: Path | str, lineno: int, value: Any) -> tuple[Conversation, str]:
    """``{"messages": [...]}``: the prompt (every turn but the last) and the last turn's text,
    which must be the assistant's and follow at least one other turn."""
    turns = parse_turns(path, lineno, "messages", value)
    if turns[-1].role != "assistant" or len(turns) < 2:
        raise DataError(f"{path}:{lineno}: 'messages' must end with an assistant turn after at least one other turn")
    return turns[:-1], turns[-1].content


def completion_text(path: Path | str, lineno: int, value: Any) -> str:
    """A conversational completion: assistant turns only, their text joined."""
    turns = parse_turns(path, lineno, "completion", value)
    if any(t.role != "assistant" for t in turns):
        raise DataError(f"{path}:{lineno}: a conversational 'completion' holds assistant turns only")
    return "".join(t.content for t in turns)


def render(tokenizer: Any, turns: Conversation) -> str:
    """The prompt as the tokenizer's chat template writes it, ending where the assistant answers."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational data (lists of turns) needs a tokenizer with a chat template; "
                        f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')} has none: give plain strings")
    return tokenizer.apply_chat_template([t.as_dict() for t in turns], tokenize=False, add_generation_prompt=True)
