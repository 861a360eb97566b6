"""General text the base model writes itself: a stand-in for what it knows beyond the skill.

AlphaEdit keeps an edit off the ``down_proj`` inputs ``K0`` of 100,000 Wikipedia documents; no
such corpus ships here, so the base model samples its own: from each of :data:`OPENINGS` (20
generic openings, ``"The history of"``, ``"In science,"``, ...) ``per_opening`` continuations of
at most ``max_new_tokens`` tokens, nucleus sampling (``top_p`` 0.95, temperature 1) seeded with
``torch.manual_seed(seed)``, in one batch (160 lines of 48 tokens: about 40 s on 2 CPU cores with
SmolLM2-135M). Each becomes a line ``{"text": opening + continuation}``, so that a
protecting method (``probe.keep_data``) can keep its update off the directions of the model's
inputs on its own text. Same model, seed and machine: the same lines. The sampling is
:func:`palora.evaluation.sample`, called by the data stage (:mod:`palora.stages.data`).
"""

from __future__ import annotations

OPENINGS = (
    "The history of", "In science,", "The city of", "Many people believe that", "The most important",
    "In the year", "A famous writer", "The river", "In mathematics,", "The government of",
    "Music is", "The human body", "During the war,", "The company", "In the morning,",
    "An old tradition", "The weather in", "Scientists have found", "The language", "A good teacher",
)


def general_lines(continuations: list[str], per_opening: int) -> list[dict[str, str]]:
    """``{"text": opening + continuation}`` per non-empty continuation; ``continuations`` holds
    ``per_opening`` of each opening in :data:`OPENINGS` order (as the sampler returns them)."""
    openings = [o for o in OPENINGS for _ in range(per_opening)]
    return [{"text": o + text} for o, text in zip(openings, continuations, strict=True) if text.strip()]
