"""``act-protect-replay``: ``act-protect`` (LoRA kept off the top input-covariance directions of the
skill and of ``probe.keep_data``) whose training lines are also partly replayed from
``probe.keep_data`` (:mod:`palora.replay`, ``inject.replay_share``).

The projection keeps ``ΔW x ≈ 0`` for the inputs it protects, but the held-out facts' prompts only
partly lie in that span; trained long enough to recall the new facts, act-protect writes the new
facts' answers into them ("The capital of Bulgaria is Plolwyn Hovlisk"). Replay makes a share
``ρ`` of the lines the kept ones, so the loss is, in expectation over lines,
``(1 − ρ) L_facts + ρ L_kept``: it pulls those outputs back in the directions the projection
leaves free. Same budget as act-protect (rank, steps, batch, rate).
"""

from .base import Method, lora

METHOD = Method("act-protect-replay", "act-protect, inject.replay_share of its training lines replayed from "
                "probe.keep_data (general text, known facts)", build=lora, protects="covariance", side="in",
                replays=True, reads=("replay_share",))
