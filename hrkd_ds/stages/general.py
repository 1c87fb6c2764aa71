"""Stage `general`: task-agnostic distillation (TinyBERT's general stage) of the pretrained teacher
into a student of any width, on the unlabeled text of every domain's training split.

The teacher is the pretrained encoder (`teacher.pretrained`), not the fine-tuned meta-teacher;
the loss is the layer-wise embedding, attention and hidden terms with uniform domain weights
(method `general` in distill/methods.py). No labels are read and nothing is evaluated: the final
student is exported to `<output_dir>/general/model`, where `student.init=general` picks it up.
"""

from __future__ import annotations

from hrkd_ds.config.deepspeed import read_ds_config
from hrkd_ds.distill.methods import build_step_module
from hrkd_ds.engine.teacher import build_teacher_engine, teacher_ds_config
from hrkd_ds.stages.checks import general_student_config, with_selected_layers
from hrkd_ds.stages.context import StageContext, seed_everything

ROLE = "general"


def run_general(ctx: StageContext) -> None:
    if ctx.run_dir.is_done(ROLE, ctx.results):
        return
    cfg, stage = ctx.cfg, ctx.cfg.general_train
    seed_everything(cfg.seed)
    teacher = ctx.build_model(cfg.teacher)  # pretrained encoder; its fresh task head is never used
    seed_everything(cfg.seed + 2)
    s_cfg = with_selected_layers(general_student_config(cfg.student), cfg.distill.layer_map, teacher.num_layers)
    student = ctx.build_model(s_cfg, teacher=teacher if s_cfg.from_teacher else None)
    module = build_step_module(ROLE, student, teacher, ctx.K, cfg.graph, cfg.distill)
    t_cfg = teacher_ds_config(read_ds_config(cfg.distill.teacher_deepspeed), ctx.micro_batch(stage), ctx.dist.world_size)
    ctx.results[ROLE] = ctx.train_stage(ROLE, module, stage, teacher=build_teacher_engine(teacher, t_cfg), evaluate=False)
    ctx.save_results()
    ctx.run_dir.mark_done(ROLE)
