"""Tracking: metrics.jsonl (the source of truth), Weights & Biases, progress bar, plots."""
