"""Settings that would fail a later stage fail before the first one trains or anything is written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import AutoConfig

from hrkd_ds.config import Config
from hrkd_ds.config.deepspeed import with_batch_sizes, zero_stage
from hrkd_ds.distill.layer_map import resolve_layer_map
from hrkd_ds.distill.methods import method, term_weights
from hrkd_ds.distill.term_registry import refuse_token_level
from hrkd_ds.errors import UserError
from hrkd_ds.models.checks import check_fit
from hrkd_ds.models.student_init import check_teacher_layers_fit, check_teacher_select_fit, teacher_widths


def general_student_config(model_cfg):
    """The student as the general stage builds it: from `general_init` (selected teacher weights or
    random sizes) unless it starts from weights of its own."""
    return dataclasses.replace(model_cfg, init=model_cfg.general_init) if model_cfg.init == "general" else model_cfg


def with_selected_layers(model_cfg, layer_map: list[int], teacher_layers: int):
    """init=teacher_select without student.teacher_layers selects the layers the student is distilled
    against (distill.layer_map, else the uniform map)."""
    if model_cfg.init != "teacher_select" or model_cfg.teacher_layers:
        return model_cfg
    return dataclasses.replace(model_cfg, teacher_layers=resolve_layer_map(model_cfg.num_layers, teacher_layers, layer_map or None))


def _teacher_shape(cfg: Config, teacher_dir: Path | None, stage_dir: Path) -> tuple[int, dict[str, int]]:
    """(layers, widths keyed by student field) of the teacher the distill stage will use, unloaded."""
    src = teacher_dir or (Path(cfg.teacher.pretrained) if cfg.teacher.pretrained else None)
    if src is None and (stage_dir / "model" / "config.json").is_file() and "teacher" not in cfg.stages:
        src = stage_dir / "model"
    if src is not None:
        c = AutoConfig.from_pretrained(str(src))
        return c.num_hidden_layers, teacher_widths(c)
    t = cfg.teacher
    return t.num_layers, {"hidden_size": t.hidden_size, "num_heads": t.num_heads, "intermediate_size": t.intermediate_size}


def check_distill_shapes(cfg: Config, ds_cfg: dict, teacher_dir: Path | None, teacher_stage_dir: Path,
                         student_cfg=None) -> None:
    """Layer map, teacher layers and widths are checked before the teacher trains, not after."""
    t_layers, t_widths = _teacher_shape(cfg, teacher_dir, teacher_stage_dir)
    s = student_cfg or cfg.student
    if s.init == "teacher_layers":
        check_teacher_layers_fit(s, t_layers, t_widths)
        s_layers = len(s.teacher_layers)
    elif s.init == "teacher_select":
        check_teacher_select_fit(with_selected_layers(s, cfg.distill.layer_map, t_layers), t_layers, t_widths)
        s_layers = s.num_layers
    elif s.pretrained:
        s_layers = AutoConfig.from_pretrained(s.pretrained).num_hidden_layers
    else:
        s_layers = s.num_layers
    resolve_layer_map(s_layers, t_layers, cfg.distill.layer_map or None)
    if cfg.graph.objective == "meta" and cfg.distill.method == "hrkd" and zero_stage(ds_cfg) == 3:  # docs/METHOD.md
        raise UserError("config field 'graph.objective': meta does not run under a ZeRO-3 student (zero_optimization.stage "
                        "3 partitions the weights its held-out step moves); use ZeRO 0-2 or another objective")
    if cfg.graph.objective == "meta" and cfg.distill.method == "hrkd" and any((ds_cfg.get(k) or {}).get("enabled") for k in ("bf16", "fp16")):
        raise UserError("config field 'graph.objective': meta measures a relative weight step of graph.meta_step, below "
                        "bf16/fp16 weight resolution; use an fp32 DeepSpeed config or another objective")
    if not cfg.distill.fused and zero_stage(ds_cfg) == 3:
        raise UserError("config field 'distill.fused': the per-domain loop reference (false) does not run under a "
                        "ZeRO-3 student; use the fused loss or ZeRO 0-2")


def model_sources(cfg: Config, teacher_dir: Path | None) -> list[tuple[str, Path]]:
    """(config field, directory) of every pretrained model a stage about to run loads."""
    out = []
    builds_teacher = "general" in cfg.stages or ("teacher" in cfg.stages and teacher_dir is None)
    if cfg.teacher.pretrained and builds_teacher:
        out.append(("teacher.pretrained", Path(cfg.teacher.pretrained)))
    if cfg.student.pretrained and ({"general", "distill"} & set(cfg.stages)) \
            and not cfg.student.from_teacher:
        out.append(("student.pretrained", Path(cfg.student.pretrained)))
    if teacher_dir is not None and "distill" in cfg.stages:
        out.append(("teacher_from", teacher_dir))
    return out


def check_models_fit(cfg: Config, teacher_dir: Path | None, tokenizer=None, teacher_tokenizer=None) -> None:
    """The models' position embeddings, vocabulary and padding id take this data and tokenizer
    (the check the model builder makes, made before the run directory exists); a teacher with its
    own tokenizer (teacher.tokenizer) is checked against that one. With no tokenizer (train.read_configs,
    before the tokenizer is trained and the data tokenized into the cache) only the position embeddings
    are checked against data.max_seq_len, which every encoding (the teacher's own too) is cut to."""
    for field, src in model_sources(cfg, teacher_dir):
        hf_config = AutoConfig.from_pretrained(str(src))
        if tokenizer is None:  # no vocabulary (0) and the model's own padding id: only the positions can fail
            check_fit(hf_config, 0, getattr(hf_config, "pad_token_id", None), cfg.data.max_seq_len, f"{field} {src}")
            continue
        tok = teacher_tokenizer if field == "teacher_from" and teacher_tokenizer is not None else tokenizer
        check_fit(hf_config, len(tok), tok.pad_token_id, cfg.data.max_seq_len, f"{field} {src}")


def check_stages(ctx) -> None:
    """Reject a DeepSpeed JSON or a sampler setting that contradicts any stage about to train."""
    cfg = ctx.cfg
    own = ctx.data.teacher  # teacher.tokenizer: the teacher's own encoding (data/teacher_encoding.py)
    check_models_fit(cfg, ctx.teacher_dir, ctx.tokenizer, own.tokenizer if own else None)
    spec = method(cfg.distill.method)
    if own and "distill" in cfg.stages and spec.uses_teacher:  # logit-level terms only
        refuse_token_level(term_weights(spec, cfg.distill), spec.prediction, cfg.distill.method)
    stages = [cfg.general_train] if "general" in cfg.stages else []
    stages += [cfg.teacher_train] if "teacher" in cfg.stages and ctx.teacher_dir is None else []
    stages += [cfg.distill_train] if "distill" in cfg.stages else []
    for stage in stages:
        with_batch_sizes(ctx.ds_cfg, ctx.micro_batch(stage), ctx.dist.world_size, ctx.ds_source)
        ctx.sampler(stage)
    if "general" in cfg.stages:  # the pretrained teacher and the student built from sizes
        check_distill_shapes(cfg, ctx.ds_cfg, Path(cfg.teacher.pretrained), ctx.run_dir.stage_dir("teacher"),
                             general_student_config(cfg.student))
    if "distill" in cfg.stages and method(cfg.distill.method).uses_teacher:
        check_distill_shapes(cfg, ctx.ds_cfg, ctx.teacher_dir, ctx.run_dir.stage_dir("teacher"))
    general_export = ctx.run_dir.stage_dir("general") / "model"
    if "distill" in cfg.stages and cfg.student.init == "general" and "general" not in cfg.stages \
            and not (general_export / "config.json").is_file():
        raise UserError(f"config field 'student.init': 'general' needs the general stage's export {general_export}; "
                        "add 'general' to stages")
