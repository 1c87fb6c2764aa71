"""Stage 2: distil the student from the frozen teacher by `distill.method` (see distill/methods.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import yaml

from hrkd_ds.config import to_dict
from hrkd_ds.config.deepspeed import read_ds_config, zero_stage
from hrkd_ds.distill.methods import build_step_module, method
from hrkd_ds.engine.distributed import any_rank
from hrkd_ds.engine.teacher import build_teacher_engine, teacher_ds_config, write_partition_record
from hrkd_ds.errors import UserError
from hrkd_ds.io import recover_dir
from hrkd_ds.models.encoder import MultiDomainClassifier
from hrkd_ds.models.loading import load_exported, load_partitioned
from hrkd_ds.stages.artifacts import measure_compression, write_card, write_run_report
from hrkd_ds.stages.checks import with_selected_layers
from hrkd_ds.stages.context import StageContext, seed_everything


def teacher_export(ctx: StageContext) -> Path | None:
    """The teacher's HF directory (`teacher_from`, or this run's teacher stage export), if there is one."""
    src = ctx.teacher_dir or ctx.run_dir.stage_dir("teacher") / "model"
    recover_dir(src)  # an export interrupted between its two renames
    return src if (src / "config.json").is_file() else None


SPLIT_FIELDS = ("format", "path", "test_path", "domains", "labels", "dev_fraction", "test_fraction", "split_seed",
                "max_seq_len")  # what fixes the dev and test examples (train_fraction only thins train)


def teacher_run_results(ctx: StageContext) -> dict | None:
    """The teacher's accuracies from the finished run `teacher_from` names, when it is one and its
    dev/test splits are ours (else the teacher is evaluated here)."""
    run = Path(ctx.cfg.teacher_from) if ctx.cfg.teacher_from else None
    if run is None or not (run / "results.json").is_file() or not (run / "config.yaml").is_file():
        return None
    theirs = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("data", {})
    ours = to_dict(ctx.cfg)["data"]
    if any(theirs.get(k) != ours[k] for k in SPLIT_FIELDS):
        return None
    return json.loads((run / "results.json").read_text()).get("teacher")


def evaluate_teacher(ctx: StageContext, teacher_engine) -> dict:
    with torch.no_grad():
        return ctx.evaluate_model(teacher_engine)


def teacher_source(ctx: StageContext) -> Path:
    src = teacher_export(ctx)
    if src is None:
        where = ctx.teacher_dir or ctx.run_dir.stage_dir("teacher") / "model"
        raise UserError(f"the distill stage needs a teacher: none at {where} (run the teacher stage or set teacher_from)")
    return src


def check_teacher_matches(teacher: MultiDomainClassifier, domains: list[str], labels: list[str], where: Path) -> None:
    t_domains = list(getattr(teacher.config, "hrkd_domains", []) or [])
    t_labels = list(getattr(teacher.config, "hrkd_labels", []) or [])
    if t_domains != domains or t_labels != labels:
        raise UserError(f"teacher at {where} was trained on domains {t_domains} / labels {t_labels}, "
                        f"but the data has {domains} / {labels}")


def load_teacher(ctx: StageContext, src: Path, t_cfg: dict) -> MultiDomainClassifier:
    """Under a ZeRO-3 teacher config the teacher is loaded straight into partitions, never whole."""
    attention = ctx.cfg.distill.attention
    teacher = load_partitioned(src, t_cfg, attention) if zero_stage(t_cfg) == 3 else load_exported(src, attention)
    check_teacher_matches(teacher, ctx.domains, ctx.labels, src)
    return teacher


def student_config(ctx: StageContext):
    """`student.init=general` starts from this run's general-distillation export."""
    s = ctx.cfg.student
    if s.init != "general":
        return s
    return dataclasses.replace(s, init="pretrained", pretrained=str(ctx.run_dir.stage_dir("general") / "model"))


def run_distill(ctx: StageContext) -> None:
    if ctx.run_dir.is_done("student", ctx.results):
        return
    cfg, stage, spec = ctx.cfg, ctx.cfg.distill_train, method(ctx.cfg.distill.method)
    from_layers = cfg.student.from_teacher
    src = teacher_source(ctx) if spec.uses_teacher or from_layers else None
    layer_source = teacher = t_cfg = None
    if from_layers:  # a full copy in host memory, only while the student is built
        layer_source = load_exported(src, cfg.distill.attention)
        check_teacher_matches(layer_source, ctx.domains, ctx.labels, src)
    if spec.uses_teacher:
        t_cfg = teacher_ds_config(read_ds_config(cfg.distill.teacher_deepspeed), ctx.micro_batch(stage), ctx.dist.world_size)
        teacher = load_teacher(ctx, src, t_cfg)
    seed_everything(cfg.seed + 1)
    s_cfg = student_config(ctx)
    if layer_source is not None:
        s_cfg = with_selected_layers(s_cfg, cfg.distill.layer_map, layer_source.num_layers)
    student = ctx.build_model(s_cfg, teacher=layer_source)
    del layer_source
    module = build_step_module(cfg.distill.method, student, teacher, ctx.K, cfg.graph, cfg.distill)
    teacher_engine = None
    if spec.uses_teacher:
        teacher_engine = build_teacher_engine(teacher, t_cfg)
        write_partition_record(teacher_engine, ctx.run_dir.stage_dir("student"), ctx.dist.rank, ctx.dist.world_size)
    if "teacher" not in ctx.results:  # teacher came from elsewhere: report it too
        found = teacher_run_results(ctx)
        if any_rank(found is None, ctx.dist.device) and teacher_engine is not None:  # every rank evaluates, or none
            found = evaluate_teacher(ctx, teacher_engine)
        if found is not None:
            ctx.results["teacher"] = found
            ctx.save_results()  # a relaunch of a preempted student stage does not evaluate it again
    ctx.results["student"] = ctx.train_stage("student", module, stage, teacher=teacher_engine)
    ctx.results["student"]["method"] = cfg.distill.method
    teacher_dir = src or teacher_export(ctx)  # the `none` baseline is compared with the teacher too
    compression = measure_compression(ctx, ctx.run_dir.stage_dir("student") / "model", teacher_dir) if teacher_dir else None
    if compression is not None:
        ctx.results["student"]["compression"] = compression
    ctx.save_results()
    write_card(ctx, "student", cfg.distill.method, cfg.student, compression)  # init=general named as such
    write_run_report(ctx)
    ctx.run_dir.mark_done("student")
