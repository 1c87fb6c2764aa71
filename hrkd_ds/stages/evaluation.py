"""Stage `eval`: re-evaluate the exported teacher and student on dev and test."""

from __future__ import annotations

import torch

from hrkd_ds.models.loading import load_exported
from hrkd_ds.stages.context import StageContext


def run_eval(ctx: StageContext) -> None:
    for role in ("teacher", "student"):
        src = ctx.teacher_dir if role == "teacher" and ctx.teacher_dir else ctx.run_dir.stage_dir(role) / "model"
        if not (src / "config.json").is_file():
            continue
        model = load_exported(src, ctx.cfg.distill.attention).to(ctx.dist.device).eval()
        with torch.no_grad():
            ctx.results.setdefault(role, {})["eval"] = ctx.evaluate_model(model)
        ctx.results[role].setdefault("dev", ctx.results[role]["eval"]["dev"])
        ctx.results[role].setdefault("test", ctx.results[role]["eval"]["test"])
    ctx.save_results()
