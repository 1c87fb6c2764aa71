"""What a finished stage leaves for people: a model card in the export, the compression report,
and the run report with its plots (also sent to W&B). Written by the main rank only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hrkd_ds.analysis.compression import compression_report
from hrkd_ds.stages.context import StageContext
from hrkd_ds.tracking.model_card import write_model_card
from hrkd_ds.tracking.report import write_report

COMPRESSION_REPEATS = 5  # per batch size and model; the grid times every student, keep it short


def _base(model_cfg) -> str:
    if model_cfg.init == "teacher_layers":
        return f"teacher layers {list(model_cfg.teacher_layers)}"
    if model_cfg.init == "teacher_select":
        return f"weights selected from teacher layers {list(model_cfg.teacher_layers)}"
    if model_cfg.pretrained:
        return f"pretrained {model_cfg.pretrained}"
    return "random init"


def _card_compression(rep: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The card's (this model, teacher) pairs from a compression report (latency at batch 1)."""
    s, t = rep["student"], rep["teacher"]
    first = next(iter(s["latency_ms"]))
    return {"params": (s["params"], t["params"]), "size_bytes": (s["size_bytes"], t["size_bytes"]),
            "latency_ms": (s["latency_ms"][first], t["latency_ms"][first])}


def measure_compression(ctx: StageContext, student_dir: Path, teacher_dir: Path) -> dict[str, Any] | None:
    """Student vs teacher size, CPU latency (batch 1 and 32) and accuracy retained, into results."""
    if not (ctx.dist.is_main and ctx.cfg.tracking.compression):
        return None
    return compression_report(student_dir, teacher_dir, seq_len=ctx.cfg.data.max_seq_len,
                              repeats=COMPRESSION_REPEATS, results=ctx.results)


def write_card(ctx: StageContext, role: str, method: str, model_cfg, compression: dict[str, Any] | None = None) -> None:
    model_dir = ctx.run_dir.stage_dir(role) / "model"
    if not ctx.dist.is_main or not (model_dir / "config.json").is_file():
        return
    info: dict[str, Any] = {
        "role": role, "method": method, "base": _base(model_cfg), "results": ctx.results.get(role),
        "max_seq_len": ctx.cfg.data.max_seq_len, "model_path": str(model_dir),
        "command": " ".join(["python", *sys.argv]),
    }
    if compression is not None:
        info["compression"] = _card_compression(compression)
        t = compression["teacher"]
        info["teacher"] = {"layers": t["layers"], "hidden": t["hidden_size"]}
    write_model_card(model_dir, info)


def write_run_report(ctx: StageContext) -> None:
    """report.md and PNGs for every stage so far; the PNGs also go to W&B."""
    if not (ctx.dist.is_main and ctx.cfg.tracking.plot):
        return
    roles = [r for r in ("teacher", "student") if r in ctx.results]
    for png in write_report(ctx.run_dir.path, ctx.metrics.rows(), ctx.results, ctx.domains, roles):
        ctx.tracker.log_image(f"report/{png.stem}", png)
