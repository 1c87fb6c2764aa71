"""Stage `eval`: re-evaluate the exported teacher and student on dev and test.

The teacher is teacher-sized: under a ZeRO-3 teacher config on several ranks
(models/loading.partitions_teacher) it is loaded straight into partitions and evaluated as the
distill teacher is, a ZeRO-3 inference engine every rank runs, each rank recording its share in
`eval/teacher_partition.rank<R>.json`. The student, and a single process, load it whole.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hrkd_ds.engine.teacher import build_teacher_engine, write_partition_record
from hrkd_ds.models.loading import load_exported, load_partitioned, partitions_teacher
from hrkd_ds.stages.context import StageContext


def eval_model(src: Path, attention: str, t_cfg: dict | None, device):
    """The model to evaluate: whole (`t_cfg` None), or a ZeRO-3 inference engine over partitions."""
    if t_cfg is None:
        return load_exported(src, attention).to(device).eval()
    return build_teacher_engine(load_partitioned(src, t_cfg, attention), t_cfg)


def run_eval(ctx: StageContext) -> None:
    t_cfg = None
    if ctx.dist.world_size > 1:  # a single process never reads the teacher config here, as before
        t_cfg = ctx.teacher_ds(ctx.cfg.distill_train)
    partitioned = t_cfg is not None and partitions_teacher(t_cfg, ctx.dist.world_size)
    for role in ("teacher", "student"):
        src = ctx.teacher_dir if role == "teacher" and ctx.teacher_dir else ctx.run_dir.stage_dir(role) / "model"
        if not (src / "config.json").is_file():
            continue
        teacher_sized = role == "teacher" and partitioned
        model = eval_model(src, ctx.cfg.distill.attention, t_cfg if teacher_sized else None, ctx.dist.device)
        if teacher_sized:
            write_partition_record(model, ctx.run_dir.stage_dir("eval"), ctx.dist.rank, ctx.dist.world_size)
        with torch.no_grad():
            # teacher.tokenizer: the teacher reads its own encoding of the same rows (StageContext.teacher_view)
            view = ctx.teacher_view() if role == "teacher" else ctx
            ctx.results.setdefault(role, {})["eval"] = view.evaluate_model(model)
        ctx.results[role].setdefault("dev", ctx.results[role]["eval"]["dev"])
        ctx.results[role].setdefault("test", ctx.results[role]["eval"]["test"])
    ctx.save_results()
