"""TRL's conversational data: turns ``{"role": ..., "content": ...}`` rendered by the tokenizer's chat template.

Accepted in a data line wherever a prompt is (:mod:`palora.io.data`):

- ``{"messages": [turn, ..., {"role": "assistant", ...}]}`` (training): the last turn is the
  completion (the loss is on it alone), every turn before it the prompt;
- ``{"prompt": [turn, ...], "completion": [{"role": "assistant", ...}]}`` (training): TRL's
  conversational prompt-completion;
- ``{"prompt": [turn, ...], "answer": ...}`` (evaluation).

A conversational prompt is rendered with ``add_generation_prompt=True``, so the model answers as
the assistant; the completion is the assistant turn as the template writes it after the prompt (its
end-of-turn marker included, as TRL trains it), ended by the tokenizer's eos unless it holds it. Plain
string prompts are left as they are (``data.chat_template`` wraps those in one user turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, one_line

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


def require_template(tokenizer: Any) -> None:
    """Refuse, in one line, a tokenizer that cannot render conversational data."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational data (lists of turns) needs a tokenizer with a chat template; "
                        f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')} has none: give plain strings")


def render(tokenizer: Any, turns: Conversation, generation_prompt: bool = True) -> str:
    """The turns as the tokenizer's chat template writes them; with ``generation_prompt``, ending where
    the assistant answers. A template that refuses the turns (roles that must alternate, no system
    role) is a one-line DataError."""
    require_template(tokenizer)
    try:
        return tokenizer.apply_chat_template([t.as_dict() for t in turns], tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except Exception as e:  # noqa: BLE001 - the template's own code (jinja's TemplateError and what it raises)
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise DataError(f"the chat template of {name} cannot render these turns: {one_line(e)}") from None


def completion_text_of(tokenizer: Any, turns: Conversation, completion: str) -> str:
    """The answer to ``turns`` as the chat template writes it (as TRL trains conversational data): what
    the whole conversation adds after the prompt, its end-of-turn marker included; the plain text when
    the template does not render the prompt as a prefix of the whole."""
    prompt = render(tokenizer, turns)
    whole = render(tokenizer, (*turns, Turn("assistant", completion)), generation_prompt=False)
    return whole[len(prompt):] if whole.startswith(prompt) else completion
