"""Files: the run directory's artifacts, model loading, JSONL data, the metrics log."""
