"""The committed results regenerate unchanged: the report writer run on the committed archive
(docs/results/cells, with the legacy summaries and the duplicate indices, as `tools/reproduce.py
--report` runs it, charts off) writes every slice JSON byte for byte as committed in docs/results/,
and the same summary.json (its `roots`, paths relative to where it is written, aside)."""

from __future__ import annotations

import json
from pathlib import Path

from hrkd_ds.analysis.grid import load_spec
from hrkd_ds.analysis.results import write_results

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"


def test_the_archive_regenerates_the_committed_slices(tmp_path):
    live = tmp_path / "runs" / "reproduce"  # no live grid: the archive alone, as on a fresh checkout
    out = tmp_path / "results"
    write_results([live, RESULTS / "cells"], tmp_path / "RESULTS.md", out,
                  intro=(RESULTS / "intro.md").read_text(), legacy_dir=RESULTS / "legacy",
                  spec=load_spec(REPO / "configs" / "reproduce" / "grid.yaml"), duplicates_dir=RESULTS / "duplicates",
                  source="runs/reproduce, docs/results/cells", charts=False)
    written = sorted(p.name for p in out.glob("*.json") if p.name != "summary.json")
    assert written == sorted(p.name for p in RESULTS.glob("*.json") if p.name not in ("summary.json", "graph_study.json"))
    for name in written:
        assert (out / name).read_bytes() == (RESULTS / name).read_bytes(), name
    regenerated, committed = (json.loads((d / "summary.json").read_text()) for d in (out, RESULTS))
    regenerated.pop("roots"), committed.pop("roots")
    assert regenerated == committed
