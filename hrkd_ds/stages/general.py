"""Stage `general`: task-agnostic distillation (TinyBERT's general stage) of the pretrained teacher
into a student of any width, on the unlabeled text of every domain's training split.

The teacher is the pretrained encoder (`teacher.pretrained`), not the fine-tuned meta-teacher;
the loss is the layer-wise embedding, attention and hidden terms with uniform domain weights
(method `general` in distill/methods.py). No labels are read and nothing is evaluated: the final
student is exported to `<output_dir>/general/model`, where `student.init=general` picks it up.

Under a ZeRO-3 teacher config on several ranks the pretrained teacher is loaded straight into
partitions (models/loading.partitions_teacher), a `teacher_*` student is copied from it a layer at
a time, and each rank records its share in `general/teacher_partition.rank<R>.json`.
"""

from __future__ import annotations

from hrkd_ds.distill.methods import build_step_module
from hrkd_ds.engine.teacher import build_teacher_engine, write_partition_record
from hrkd_ds.models.build import pretrained_config
from hrkd_ds.models.encoder import MultiDomainClassifier
from hrkd_ds.models.loading import load_partitioned, partitions_teacher
from hrkd_ds.stages.checks import general_student_config, with_selected_layers
from hrkd_ds.stages.context import StageContext, seed_everything

ROLE = "general"


def general_teacher(ctx: StageContext, t_cfg: dict) -> MultiDomainClassifier:
    """The pretrained encoder (its fresh task head is never used): whole, or, when the teacher
    config partitions, straight into this rank's ZeRO-3 partitions (never whole on any rank)."""
    cfg = ctx.cfg
    if not (cfg.teacher.pretrained and partitions_teacher(t_cfg, ctx.dist.world_size)):
        return ctx.build_model(cfg.teacher)
    config = pretrained_config(cfg.teacher, len(ctx.tokenizer), ctx.tokenizer.pad_token_id, cfg.data.max_seq_len,
                               ctx.domains, ctx.labels)
    return load_partitioned(cfg.teacher.pretrained, t_cfg, cfg.distill.attention, config)


def run_general(ctx: StageContext) -> None:
    if ctx.run_dir.is_done(ROLE, ctx.results):
        return
    cfg, stage = ctx.cfg, ctx.cfg.general_train
    t_cfg = ctx.teacher_ds(stage)
    seed_everything(cfg.seed)
    teacher = general_teacher(ctx, t_cfg)
    seed_everything(cfg.seed + 2)
    s_cfg = with_selected_layers(general_student_config(cfg.student), cfg.distill.layer_map, teacher.num_layers)
    student = ctx.build_model(s_cfg, teacher=teacher if s_cfg.from_teacher else None)
    module = build_step_module(ROLE, student, teacher, ctx.K, cfg.graph, cfg.distill)
    engine = build_teacher_engine(teacher, t_cfg)
    if partitions_teacher(t_cfg, ctx.dist.world_size):
        write_partition_record(engine, ctx.run_dir.stage_dir(ROLE), ctx.dist.rank, ctx.dist.world_size)
    ctx.results[ROLE] = ctx.train_stage(ROLE, module, stage, teacher=engine, evaluate=False)
    ctx.save_results()
    ctx.run_dir.mark_done(ROLE)
