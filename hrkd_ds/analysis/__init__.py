"""Evidence for the reproduction grid: paired bootstrap, compression report, results tables."""
