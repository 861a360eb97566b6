"""``lora-replay``: plain LoRA whose training lines are partly replayed from what the model already
knows (:mod:`palora.replay`: ``inject.replay_share`` of the lines from ``probe.keep_data``), the
practical baseline against forgetting that protects nothing structurally; same budget as LoRA.
"""

from .base import Method, lora

METHOD = Method("lora-replay", "plain peft LoRA, inject.replay_share of its training lines replayed from "
                "probe.keep_data (general text, known facts)", build=lora, replays=True, reads=("replay_share",))
