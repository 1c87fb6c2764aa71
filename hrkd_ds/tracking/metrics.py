"""Append-only metrics.jsonl, rewound on resume so every step appears exactly once."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from hrkd_ds.io import atomic_write_text


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class MetricsLog:
    """One JSON object per line; only rank 0 writes."""

    def __init__(self, path: str | Path, enabled: bool) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def rewind(self, stage: str, step: int) -> None:
        """Drop lines of `stage` logged after `step` (work redone after a crash since the checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a crash mid-write
                dropped += 1
                continue
            if row.get("stage") == stage and row.get("step", 0) > step:
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(_clean(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self, stage: str | None = None) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in out if stage is None or r.get("stage") == stage]
