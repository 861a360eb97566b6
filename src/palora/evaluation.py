"""Batched greedy generation and the accuracy of a model on evaluation sets (the one evaluation
path: the eval stage and ``palora compare`` score models through :func:`evaluate_sets`), and
seeded sampling (:func:`sample`: the text the demo's base model writes itself).

``accuracy = (1/n) * sum_i check(output_i, answer_i, aliases_i)`` over the first ``n`` examples,
with the binomial standard error ``sqrt(p (1 - p) / n)``. ``retention = after / expert``: the
share of the expert's skill accuracy a model keeps after knowledge injection.

Generation is greedy (``do_sample=False``), so a batch gives the same outputs as one prompt at a
time: prompts are left-padded, which keeps every prompt's last token at the last position, and
the attention mask hides the padding.

A numeric skill's wrong answers are also sorted by kind (:mod:`palora.core.mistakes`: a near miss,
a fact's number or its beginning, another number, words), which tells a weakened skill from the
facts' answer format taking over its prompts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import EvalConfig, RunConfig, require
from .core.checkers import check_reference, get_checker
from .core.mistakes import fact_prefixes, tally
from .errors import DataError
from .io.data import EvalExample, format_prompt, load_eval


@contextmanager
def generation_mode(model: Any, tokenizer: Any) -> Iterator[None]:
    """Left padding (and eos as pad when there is no pad token) and eval mode, restored after."""
    padding_side, pad_token, training = tokenizer.padding_side, tokenizer.pad_token, model.training
    tokenizer.padding_side = "left"
    if pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    try:
        yield
    finally:
        tokenizer.padding_side = padding_side
        if pad_token is None:
            tokenizer.pad_token = None
        model.train(training)


def eos_ids(model: Any, tokenizer: Any) -> list[int] | None:
    """The tokenizer's eos and any the model's generation_config lists: generation stops at each.

    A chat model often ends its turn with a token (``<|eot_id|>``, ``<|im_end|>``) that only one
    of the two names, so stopping at the union keeps it from running on past its answer.
    """
    model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [model_eos] if isinstance(model_eos, int) else list(model_eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    return ids or None


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Greedy continuations of ``prompts`` (already formatted), new tokens only, in input order.

    Prompts are tokenised with ``add_special_tokens=True`` and batched longest first (similar
    lengths pad little, and a batch that does not fit in memory fails at once).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not prompts:
        return []
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    outputs: list[str] = [""] * len(prompts)
    with generation_mode(model, tokenizer), torch.inference_mode():
        # Options go as keyword arguments, not as a GenerationConfig: transformers merges the
        # model's own generation_config into a passed config and then warns about the sampling
        # settings (temperature, top_p, ...) a released model ships with; keyword arguments win
        # over those silently.
        options = dict(
            do_sample=False,
            use_cache=True,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos_ids(model, tokenizer),
        )
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
            index = order[start : start + batch_size]
            inputs = tokenizer(
                [prompts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=True
            ).to(model.device)
            out = model.generate(**inputs, **options)  # (B, T + new)
            new = out[:, inputs["input_ids"].shape[1] :]  # (B, new): left padding aligns the ends
            for i, text in zip(index, tokenizer.batch_decode(new, skip_special_tokens=True)):
                outputs[i] = text
    return outputs


def sample(model: Any, tokenizer: Any, prompts: Sequence[str], per_prompt: int, seed: int, max_new_tokens: int,
           top_p: float = 0.95) -> list[str]:
    """``per_prompt`` sampled continuations of every prompt (nucleus sampling at temperature 1,
    ``torch.manual_seed(seed)`` first), new tokens only, prompt by prompt, all in one left-padded
    batch: the same model, seed and machine give the same texts."""
    if per_prompt <= 0 or not prompts:
        return []
    torch.manual_seed(seed)
    with generation_mode(model, tokenizer), torch.inference_mode():
        inputs = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=True).to(model.device)
        out = model.generate(**inputs, do_sample=True, top_p=top_p, temperature=1.0, top_k=0,
                             max_new_tokens=max_new_tokens, num_return_sequences=per_prompt,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_ids(model, tokenizer))
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@dataclass
class EvalResult:
    """Accuracy of a model on ``n`` examples, with each output and whether it was right; for a
    numeric skill set, the wrong answers counted by kind (:func:`palora.core.mistakes.tally`)."""

    accuracy: float
    n: int
    correct: list[bool]
    outputs: list[str]
    mistakes: dict[str, int] | None = None

    @property
    def stderr(self) -> float:
        """Binomial standard error of the accuracy, ``sqrt(p (1 - p) / n)``."""
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.n) if self.n else math.nan


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[EvalExample],
    checker: str,
    *,
    chat_template: bool,
    max_new_tokens: int,
    batch_size: int,
    limit: int | None = None,
    desc: str = "eval",
    progress: bool = True,
) -> EvalResult:
    """Generate greedily for the first ``limit`` examples and score each with ``checker``."""
    check = get_checker(checker)
    selected = list(examples if limit is None else examples[:limit])
    if not selected:
        raise DataError("no evaluation examples to score")
    # An answer the checker cannot read fails now rather than after the whole generation.
    for ex in selected:
        check_reference(checker, ex.answer, ex.aliases)
    prompts = [format_prompt(tokenizer, ex.prompt, chat_template) for ex in selected]
    outputs = generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc=desc, progress=progress)
    correct = [check(out, ex.answer, ex.aliases) for out, ex in zip(outputs, selected)]
    return EvalResult(accuracy=sum(correct) / len(correct), n=len(correct), correct=correct, outputs=outputs)


def retention(after: float, expert: float) -> float | None:
    """``after / expert``: the share of the expert's accuracy kept; None when the expert scores 0."""
    return None if expert == 0 else after / expert


#: a named evaluation set: its examples and the checker that scores them
EvalSet = tuple[list[EvalExample], str]


def evaluate_sets(model: Any, tokenizer: Any, sets: dict[str, EvalSet], cfg: RunConfig, *, desc: str = "eval",
                  progress: bool = True) -> dict[str, EvalResult]:
    """:func:`evaluate` on every named set with the run's generation settings (``eval.*``, the chat template).

    A numeric ``skill`` set's result also counts its wrong answers by kind, the numbers of the
    ``knowledge`` set's answers being the facts' format."""
    e: EvalConfig = cfg.eval
    results = {name: evaluate(model, tokenizer, examples, checker, chat_template=cfg.data.chat_template,
                              max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, limit=e.limit,
                              desc=f"{desc}: {name}", progress=progress)
               for name, (examples, checker) in sets.items()}
    if "skill" in sets:
        results["skill"].mistakes = skill_mistakes(sets, results["skill"])
    return results


def skill_mistakes(sets: dict[str, EvalSet], skill: EvalResult) -> dict[str, int] | None:
    """The skill result's wrong answers by kind (:func:`palora.core.mistakes.tally`), the whole numbers
    of the ``knowledge`` set's answers and aliases being the facts' format; None unless the skill is numeric."""
    examples, checker = sets["skill"]
    if checker != "numeric":
        return None
    facts = fact_prefixes(a for ex in sets.get("knowledge", ([], ""))[0] for a in (ex.answer, *ex.aliases))
    return tally(skill.outputs, [ex.answer for ex in examples[: skill.n]], skill.correct, facts)


#: per split, the ``data.*`` keys of the skill and knowledge sets and the flag that sets each
SPLITS = {"test": (("skill_eval", "--skill-eval"), ("knowledge_eval", "--knowledge-eval")),
          "val": (("skill_val", "--set data.skill_val=FILE"), ("knowledge_val", "--set data.knowledge_val=FILE"))}


def evaluation_sets(cfg: RunConfig, split: str = "test", known_val: bool = False) -> dict[str, EvalSet]:
    """A split's evaluation files, each read and checked against its checker (``FILE:LINE`` errors),
    so that a bad file fails before training: ``skill`` and ``knowledge`` (required) and ``known``
    (optional: ``data.known_eval`` on the test split; ``data.known_val`` on ``val`` when
    ``known_val``). ``val``: the splits ``palora compare`` chooses rates on."""
    d = cfg.data
    (skill, skill_flag), (knowledge, knowledge_flag) = SPLITS[split]
    sets = {"skill": (load_eval(require(getattr(d, skill), f"data.{skill}", skill_flag), d.skill_checker),
                      d.skill_checker),
            "knowledge": (load_eval(require(getattr(d, knowledge), f"data.{knowledge}", knowledge_flag),
                                    d.knowledge_checker), d.knowledge_checker)}
    known = d.known_eval if split == "test" else d.known_val if known_val else None
    if known:
        sets["known"] = (load_eval(known, d.knowledge_checker), d.knowledge_checker)
    return sets
