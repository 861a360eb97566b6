"""REINFORCE for the SVF expert: sampled answers, a verifiable ±1 reward, an optional KL to the base.

For a prompt ``x`` of the skill data the current expert ``π_z`` samples ``k`` answers
``a = (a_1 … a_N)`` (up to and including the first eos); a checker (:mod:`palora.core.checkers`)
compares each with the reference answer (the training line's completion) and gives
``r = +1`` (right) or ``r = −1`` (wrong). The loss of one step over ``B`` answers is

    L(z) = (1/B) Σ_j [ −r_j · log π_z(a_j | x_j) + λ · KL_j ],
    log π_z(a | x) = Σ_t log π_z(a_t | x, a_<t)          (token_reduction=sum; mean: / N_j)
    KL_j = Σ_t Σ_v π_0(v | x_j, a_j,<t) · (log π_0(v | ·) − log π_z(v | ·))

where ``π_0`` is the base model: the same model with every SVF scale at 1
(:func:`palora.core.svf.identity_scales`), so no second copy of the weights is held. Its gradient is
the REINFORCE estimate of ``−∇ E[r]`` plus ``λ ∇ KL(π_0 ‖ π_z)``. Log-probabilities are those of
the policy that sampled: logits divided by the temperature, the model in eval mode (no dropout)
for the whole step.

What follows Transformer² (Sun, Cetin, Tang 2025; SakanaAI/self-adaptive-llms, the ``Reinforce``
class of ``optim_modules.py``): the ±1 reward of its tasks' ``get_rewards``; the loss
``−log_likelihood · reward`` with the log-likelihood summed over the answer's tokens; the KL term
``F.kl_div(log π_z, log π_0, log_target=True, reduction="sum")`` (that is ``KL(π_0 ‖ π_z)`` over
the answer positions and the vocabulary) weighted by ``kl_ref_coeff``; the mean over the batch;
Adam (here AdamW with no weight decay, the same update) at lr 2e-3 with the gradient norm
clipped to 1e-3; the optional reward normalisation ``rw_norm`` (mean 0, std 1 over the batch).
What differs: answers come from Hugging Face ``generate`` (batched, left padding,
``samples_per_prompt`` answers per prompt, at a temperature) instead of vLLM; the base
log-probabilities come from the identity scales rather than from reloaded base weights; and
``token_reduction=mean`` offers the per-token mean as an option.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import ReinforceConfig
from ..core.checkers import check_reference, get_checker
from ..core.svf import identity_scales
from ..errors import DataError
from ..evaluation import eos_ids
from ..io.data import TrainExample, format_prompt


@dataclass(frozen=True)
class PromptItem:
    """One training prompt: its token ids (formatted, with the tokenizer's special tokens) and the
    reference answer the checker compares the sampled answers with."""

    input_ids: list[int]
    answer: str


def prompt_items(examples: Sequence[TrainExample], tokenizer: Any, chat_template: bool,
                 checker: str) -> list[PromptItem]:
    """The prompts of ``{prompt, completion}`` training lines, each completion (stripped) the reference.

    ``{text}`` lines have no prompt to sample from and are refused, as is a reference the
    checker cannot read (a completion that is not a number for ``numeric``).
    """
    if any(not ex.prompt for ex in examples):
        raise DataError("svf.objective=reinforce needs {prompt, completion} training lines (found a {text} line): "
                        "the prompt is sampled from, the completion is the reference answer")
    answers = [ex.completion.strip() for ex in examples]
    for i, answer in enumerate(answers):
        try:
            check_reference(checker, answer)
        except DataError as e:
            raise DataError(f"skill training line {i + 1}: {e}") from None
    prompts = [format_prompt(tokenizer, ex.prompt, chat_template) for ex in examples]
    ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    return [PromptItem(list(p), a) for p, a in zip(ids, answers)]


@dataclass
class PromptCollator:
    """Left-pads prompts into ``input_ids``, ``attention_mask`` (B, P); the answers go as a list.

    Left padding puts every prompt's last token at position ``P − 1``, where generation continues.
    """

    pad_token_id: int

    def __call__(self, items: Sequence[PromptItem]) -> dict[str, Any]:
        length = max(len(it.input_ids) for it in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it.input_ids)
            input_ids[row, length - n:] = torch.tensor(it.input_ids, dtype=torch.long)
            attention_mask[row, length - n:] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "answers": [it.answer for it in items]}


@dataclass
class Rollout:
    """Sampled answers after their prompts; row ``j`` is prompt ``j // k``'s answer ``j % k``."""

    sequences: torch.Tensor  # (B·k, P + N): left-padded prompt, then the answer (padded after its eos)
    attention_mask: torch.Tensor  # (B·k, P + N)
    answer_mask: torch.Tensor  # (B·k, N) bool: the answer's tokens, up to and including its first eos
    prompt_length: int  # P
    texts: list[str]  # the decoded answers (special tokens dropped)

    @property
    def answers(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length:]  # (B·k, N)


def _answer_mask(new: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """True up to and including the first eos of each row of ``new`` (B, N); all True without one."""
    is_eos = torch.isin(new, torch.tensor(eos, device=new.device))
    before = is_eos.long().cumsum(1) - is_eos.long()  # eos tokens strictly before each position
    return before == 0


@torch.no_grad()
def sample(model: nn.Module, tokenizer: Any, batch: dict[str, Any], cfg: ReinforceConfig) -> Rollout:
    """``cfg.samples_per_prompt`` answers per prompt of ``batch`` (a :class:`PromptCollator` batch),
    by ``generate(do_sample=True)`` at ``cfg.temperature``, no top-k / top-p truncation (the
    policy's own distribution), with the KV cache; the torch RNG makes it reproducible."""
    eos = eos_ids(model, tokenizer) or []
    out = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=True,
        temperature=cfg.temperature, top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
        num_return_sequences=cfg.samples_per_prompt, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos or None, use_cache=True,
    )  # (B·k, P + N), each prompt repeated k times in a row
    P = batch["input_ids"].shape[1]
    new = out[:, P:]  # (B·k, N)
    mask = _answer_mask(new, eos) if eos else torch.ones_like(new, dtype=torch.bool)
    prompt_mask = batch["attention_mask"].repeat_interleave(cfg.samples_per_prompt, dim=0)  # (B·k, P)
    texts = [tokenizer.decode(row[m], skip_special_tokens=True) for row, m in zip(new, mask)]
    return Rollout(out, torch.cat([prompt_mask, mask.long()], dim=1), mask, P, texts)


def answer_logprobs(model: nn.Module, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(logits / T)`` (B·k, N, V), float32, at the positions that predict the answer's tokens.

    Positions count from each row's first prompt token, as ``generate`` counts them under left
    padding. Where the model takes ``logits_to_keep``, only the last N + 1 positions get logits
    (the vocabulary projection of the prompt is never formed).
    """
    mask = rollout.attention_mask
    N = rollout.answers.shape[1]
    accepts = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {}
    if "position_ids" in accepts:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
    if "logits_to_keep" in accepts:
        kwargs["logits_to_keep"] = N + 1
    logits = model(input_ids=rollout.sequences, attention_mask=mask, **kwargs).logits  # (B·k, N + 1 or P + N, V)
    return (logits[:, -(N + 1):-1].float() / temperature).log_softmax(-1)  # position t predicts token t + 1


def answer_logprob(logp: torch.Tensor, rollout: Rollout, reduction: str = "sum") -> torch.Tensor:
    """``log π(a | x)`` (B·k,): the answer tokens' log-probabilities summed (or averaged) over the answer."""
    mask = rollout.answer_mask.to(logp.dtype)  # (B·k, N)
    token = logp.gather(-1, rollout.answers.unsqueeze(-1)).squeeze(-1) * mask  # (B·k, N)
    total = token.sum(1)
    return total if reduction == "sum" else total / mask.sum(1).clamp_min(1.0)


def kl_to_base(logp: torch.Tensor, base_logp: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """``KL_j = Σ_t Σ_v π_0 (log π_0 − log π_z)`` (B·k,) over the answer positions of each row."""
    per_position = (base_logp.exp() * (base_logp - logp)).sum(-1)  # (B·k, N)
    return (per_position * answer_mask.to(per_position.dtype)).sum(1)


def rewards_of(texts: Sequence[str], answers: Sequence[str], checker: str) -> torch.Tensor:
    """``+1`` where ``checker`` accepts the answer, else ``−1`` (float32)."""
    check = get_checker(checker)
    return torch.tensor([1.0 if check(t, a, ()) else -1.0 for t, a in zip(texts, answers)])


def normalise(rewards: torch.Tensor) -> torch.Tensor:
    """``(r − mean) / std`` over the batch (population std, at least 1e-7), as Transformer²'s ``rw_norm``."""
    return (rewards - rewards.mean()) / rewards.std(unbiased=False).clamp_min(1e-7)


def reinforce_loss(model: nn.Module, rollout: Rollout, rewards: torch.Tensor, cfg: ReinforceConfig
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """``L(z)`` of the module docstring for one rollout and its (possibly normalised) rewards."""
    logp = answer_logprobs(model, rollout, cfg.temperature)  # (B·k, N, V)
    r = rewards.to(logp.device)
    loss = -(r * answer_logprob(logp, rollout, cfg.token_reduction)).mean()
    stats: dict[str, float] = {}
    if cfg.kl_coeff > 0:
        with torch.no_grad(), identity_scales(model):
            base = answer_logprobs(model, rollout, cfg.temperature)
        kl = kl_to_base(logp, base, rollout.answer_mask).mean()
        loss = loss + cfg.kl_coeff * kl
        stats["kl"] = float(kl.detach())
    return loss, stats


@dataclass
class ReinforceObjective:
    """The loss of one micro-batch of prompts for :func:`palora.training.loop.train` (its ``loss_fn``):
    sample, score with ``checker``, then :func:`reinforce_loss`. Logs the mean raw reward
    (``2·accuracy − 1``) and, with a KL penalty, the mean KL."""

    tokenizer: Any
    cfg: ReinforceConfig
    checker: str

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        training = model.training
        model.eval()  # no dropout: the log-probabilities are those of the policy that sampled
        try:
            rollout = sample(model, self.tokenizer, batch, self.cfg)
            answers = [a for a in batch["answers"] for _ in range(self.cfg.samples_per_prompt)]
            rewards = rewards_of(rollout.texts, answers, self.checker)
            shaped = normalise(rewards) if self.cfg.reward_norm else rewards
            loss, stats = reinforce_loss(model, rollout, shaped, self.cfg)
        finally:
            model.train(training)
        return loss, {"reward": float(rewards.mean()), **stats}
