"""Stage 2: distil the student from the frozen teacher by `distill.method` (see distill/methods.py)."""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from pathlib import Path

import torch
import yaml

from hrkd_ds.config import to_dict
from hrkd_ds.config.deepspeed import compute_precision, zero_stage
from hrkd_ds.data.augment import with_transfer_set
from hrkd_ds.data.collate import collate_episode
from hrkd_ds.distill.methods import build_step_module, method, term_weights
from hrkd_ds.distill.target_confidence import confidence_warning, soft_target_entropy
from hrkd_ds.distill.teacher_targets import (
    cacheable, label_rows, load_or_build, reads_pooled, split_columns, targets_key, teacher_fingerprint,
)
from hrkd_ds.engine.distributed import any_rank, barrier
from hrkd_ds.engine.teacher import build_teacher_engine, write_partition_record
from hrkd_ds.errors import UserError
from hrkd_ds.io import recover_dir
from hrkd_ds.models.encoder import MultiDomainClassifier
from hrkd_ds.models.loading import load_exported, load_layer_source, load_partitioned
from hrkd_ds.stages.artifacts import measure_compression, write_card, write_run_report
from hrkd_ds.stages.checks import with_selected_layers
from hrkd_ds.stages.context import StageContext, data_cache_dir, seed_everything


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


class TeacherShape:
    """What the loss's constructor reads of a teacher (width, depth, internals switches), from its
    config.json alone: with cached targets no teacher weights are loaded for the stage."""

    padding_free = False

    def __init__(self, src: Path) -> None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(src))
        self.hidden_size, self.num_layers = config.hidden_size, config.num_hidden_layers

    def select_internals(self, *args, **kwargs) -> None:
        pass


@dataclasses.dataclass
class TransferContext(StageContext):
    """The distill stage's view of the run: training rows with the transfer set's augmented copies
    (data/augment.py) and, with cached targets, the teacher's logits for each row in every batch."""

    targets: list | None = None  # per domain (n_d, C) memory maps (distill/teacher_targets.py)
    pooled: list | None = None  # per domain (n_d, H_t): the teacher's cached pooled states, when a term reads them

    def collate_fn(self):
        train = [self.data.splits["train"][d] for d in self.domains]
        pad_id, device, targets, pooled = self.tokenizer.pad_token_id, self.dist.device, self.targets, self.pooled
        own = self.data.teacher  # teacher.tokenizer: the teacher's rows ride along (unless its logits are cached)
        teacher = ([own.data.splits["train"][d] for d in self.domains], own.pad_id) if own and targets is None else None

        def collate(episode):
            batch = collate_episode(train, episode, pad_id, self.cfg.data.pad_to, self.cfg.data.max_seq_len, targets, teacher,
                                    pooled)
            return {k: v.to(device) for k, v in batch.items()}

        return collate


def cached_targets(cfg, spec) -> bool:
    """`transfer.teacher_targets: cached` and a recipe the cache can serve (logits, labels, pooled
    states); a layer-wise one stays online."""
    if not spec.uses_teacher or cfg.transfer.teacher_targets != "cached":
        return False
    return cacheable(term_weights(spec, cfg.distill), task_head=spec.prediction)


def _replaced(ctx: StageContext, **changes) -> TransferContext:
    return TransferContext(**{**{f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}, **changes})


def transfer_context(ctx: StageContext, src: Path) -> TransferContext:
    """The training rows plus their augmented copies; rank 0 builds (or checks) the cache first."""
    specials, mask_id = set(ctx.tokenizer.all_special_ids), ctx.tokenizer.mask_token_id
    data = None
    for turn in (0, 1):
        error = None
        if ctx.dist.is_main == (turn == 0):
            try:
                data = with_transfer_set(ctx.data, src, ctx.cfg.transfer, specials, mask_id, data_cache_dir(ctx.cfg, ctx.run_dir),
                                         log=ctx.dist.is_main)
            except Exception as err:  # noqa: BLE001 - re-raised below, after every rank has heard of it
                error = err
        if any_rank(error is not None, ctx.dist.device):
            raise error or UserError("transfer set preparation failed on another rank (see its message)")
    return _replaced(ctx, data=data)


def with_cached_targets(ctx: TransferContext, src: Path, stage, spec) -> TransferContext:
    """The teacher's logits (and pooled states, when a term reads them) for every training row,
    from the cache or computed now (rank-sharded through a teacher engine that is dropped
    afterwards); the teacher's accuracies are measured here when the run does not have them yet."""
    cfg = ctx.cfg
    pooled = reads_pooled(term_weights(spec, cfg.distill), task_head=spec.prediction)
    t_cfg = ctx.teacher_ds(stage)
    precision = compute_precision(t_cfg)
    view = ctx.teacher_view()  # keyed on, and computed from, the teacher's own tokenisation
    train = [view.data.splits["train"][d] for d in ctx.domains]
    final = Path(data_cache_dir(ctx.cfg, ctx.run_dir)) / "teacher_targets" / targets_key(teacher_fingerprint(src), train, cfg.data.max_seq_len,
                                                                     cfg.data.pad_to, precision, pooled)
    engine = None

    def teacher_engine():
        nonlocal engine
        if engine is None:
            model = load_teacher(ctx, src, t_cfg)
            model.select_internals([model.num_layers] if pooled else (), ())  # the pooled term's last layer only
            engine = build_teacher_engine(model, t_cfg)
        return engine

    def forward(inputs):
        """The logits, then (pooled) the last layer's position-0 state: one row of C + H_t columns."""
        out = teacher_engine()(**inputs, output_internals=pooled)
        return torch.cat([out.logits.float(), out.hidden_states[-1][:, 0].float()], dim=-1) if pooled else out.logits

    def build():
        pad = cfg.data.max_seq_len if cfg.data.pad_to == "max_length" else None
        return label_rows(forward, train, view.tokenizer.pad_token_id, ctx.dist.rank, ctx.dist.world_size, ctx.dist.device, pad)

    t0 = time.perf_counter()
    rows, built = load_or_build(final, train, build, ctx.dist.rank, lambda flag: any_rank(flag, ctx.dist.device), barrier)
    targets, pooled_states = split_columns(rows, len(ctx.labels), pooled)
    if ctx.dist.is_main:
        print(f"[hrkd] teacher targets {'computed and cached' if built else 'read from the cache'}: {final} "
              f"({sum(len(t) for t in targets)} rows{', logits and pooled states' if pooled else ''}, "
              f"{time.perf_counter() - t0:.1f} s); no teacher forward in the distill steps",
              flush=True)
        tau = cfg.distill.temperature
        warning = confidence_warning(soft_target_entropy(targets, tau), tau)
        if warning:
            print(warning, flush=True)
    if "teacher" not in ctx.results:  # as run_distill does for an online teacher
        found = teacher_run_results(ctx)
        if any_rank(found is None, ctx.dist.device):
            found = evaluate_teacher(view, teacher_engine())
        ctx.results["teacher"] = found
        ctx.save_results()
    del engine
    gc.collect()
    return _replaced(ctx, targets=targets, pooled=pooled_states)


def run_distill(ctx: StageContext) -> None:
    if ctx.run_dir.is_done("student", ctx.results):
        return
    cfg, stage, spec = ctx.cfg, ctx.cfg.distill_train, method(ctx.cfg.distill.method)
    from_layers = cfg.student.from_teacher
    src = teacher_source(ctx) if spec.uses_teacher or from_layers else None
    layer_source = teacher = t_cfg = None
    cached = cached_targets(cfg, spec)  # logit-only + transfer.teacher_targets=cached: no teacher engine
    train_ctx = _replaced(ctx) if ctx.data.teacher else ctx  # teacher.tokenizer: its rows in every batch
    if spec.uses_teacher and (cfg.transfer.augment_factor or cached):  # the teacher stage and `none` never see it
        train_ctx = transfer_context(ctx, src)
    if cached:
        train_ctx = with_cached_targets(train_ctx, src, stage, spec)
    elif spec.uses_teacher and cfg.transfer.teacher_targets == "cached" and ctx.dist.is_main:
        print("[hrkd] transfer.teacher_targets=cached: this recipe has layer-wise terms (per-token teacher states), "
              "the teacher runs online", flush=True)
    if from_layers or (spec.uses_teacher and not cached):
        t_cfg = ctx.teacher_ds(stage)
    if from_layers:  # only while the student is built; partitioned under a ZeRO-3 teacher config on
        # several ranks and copied a layer at a time (issue 30)
        layer_source = load_layer_source(src, t_cfg, cfg.distill.attention, ctx.dist.world_size)
        check_teacher_matches(layer_source, ctx.domains, ctx.labels, src)
    if spec.uses_teacher and not cached:
        teacher = load_teacher(ctx, src, t_cfg)
    seed_everything(cfg.seed + 1)
    s_cfg = student_config(ctx)
    if layer_source is not None:
        s_cfg = with_selected_layers(s_cfg, cfg.distill.layer_map, layer_source.num_layers)
    student = ctx.build_model(s_cfg, teacher=layer_source)
    del layer_source
    module = build_step_module(cfg.distill.method, student, TeacherShape(src) if cached else teacher, ctx.K, cfg.graph, cfg.distill)
    teacher_engine = None
    if spec.uses_teacher and not cached:
        teacher_engine = build_teacher_engine(teacher, t_cfg)
        write_partition_record(teacher_engine, ctx.run_dir.stage_dir("student"), ctx.dist.rank, ctx.dist.world_size)
    if "teacher" not in ctx.results:  # teacher came from elsewhere: report it too
        found = teacher_run_results(ctx)
        if any_rank(found is None, ctx.dist.device) and teacher_engine is not None:  # every rank evaluates, or none
            found = evaluate_teacher(ctx.teacher_view(), teacher_engine)
        if found is not None:
            ctx.results["teacher"] = found
            ctx.save_results()  # a relaunch of a preempted student stage does not evaluate it again
    ctx.results["student"] = train_ctx.train_stage("student", module, stage, teacher=teacher_engine)
    ctx.results["student"]["method"] = cfg.distill.method
    teacher_dir = src or teacher_export(ctx)  # the `none` baseline is compared with the teacher too
    compression = measure_compression(ctx, ctx.run_dir.stage_dir("student") / "model", teacher_dir) if teacher_dir else None
    if compression is not None:
        ctx.results["student"]["compression"] = compression
    ctx.save_results()
    write_card(ctx, "student", cfg.distill.method, cfg.student, compression)  # init=general named as such
    write_run_report(ctx)
    ctx.run_dir.mark_done("student")
