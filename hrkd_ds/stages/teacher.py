"""Stage 1: the multi-domain meta-teacher, one encoder with K*C outputs trained on labels."""

from __future__ import annotations

from hrkd_ds.distill.methods import SupervisedModule
from hrkd_ds.stages.artifacts import write_card, write_run_report
from hrkd_ds.stages.context import StageContext, seed_everything


def run_teacher(ctx: StageContext) -> None:
    """Skipped when the teacher comes from elsewhere (`teacher_from`) or already finished."""
    if ctx.teacher_dir is not None or ctx.run_dir.is_done("teacher", ctx.results):
        return
    cfg = ctx.cfg
    seed_everything(cfg.seed)
    model = ctx.build_model(cfg.teacher)
    ctx.results["teacher"] = ctx.train_stage("teacher", SupervisedModule(model, ctx.K), cfg.teacher_train)
    ctx.save_results()
    write_card(ctx, "teacher", "supervised", cfg.teacher)
    write_run_report(ctx)
    ctx.run_dir.mark_done("teacher")
