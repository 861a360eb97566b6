"""The one training loop (both stages), its checkpoints, several processes, REINFORCE, memory probes."""
