"""Range and cross-field checks of a loaded config: what types alone cannot express."""

from __future__ import annotations

import math
from typing import Any

from hrkd_ds.allocator import MAX_KIB
from hrkd_ds.config.schema import SCHEDULE_OF_ROLE, STAGES, STUDENT_INITS, Config, ModelConfig, StageConfig
from hrkd_ds.errors import UserError


def _check_range(name: str, ok: bool, value: Any, what: str) -> None:
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise UserError(f"config field '{name}': {value!r} is out of range ({what})")


def validate(cfg: Config) -> Config:
    """Ranges and cross-field rules that types alone cannot express (choices are `Literal` types),
    in a fixed order, so a config with several faults always names the same one first."""
    for check in (_stages_and_inits, _data, _models, _graph, _train_and_distill, _transfer, _cross_tokenizer, _schedules):
        check(cfg)
    return cfg


def _stages_and_inits(cfg: Config) -> None:
    if not cfg.stages:
        raise UserError("config field 'stages': at least one stage is required")
    if len(set(cfg.stages)) != len(cfg.stages) or cfg.stages != sorted(cfg.stages, key=STAGES.index):
        raise UserError(f"config field 'stages': {cfg.stages} must list each stage once, in the order {', '.join(STAGES)}")
    if "general" in cfg.stages and "distill" in cfg.stages and cfg.student.init != "general":
        raise UserError(f"config field 'student.init': {cfg.student.init!r} ignores the general stage's student; "
                        "set it to 'general' or run the general stage alone")
    if cfg.student.init == "general" and cfg.student.pretrained:
        raise UserError("config field 'student.pretrained': unused when student.init is 'general' (the student starts "
                        "from this run's general stage); leave it empty")
    if cfg.teacher.init in STUDENT_INITS:
        raise UserError(f"config field 'teacher.init': {cfg.teacher.init!r} is for the student only")
    if "general" in cfg.stages and not cfg.teacher.pretrained:
        raise UserError("config field 'teacher.pretrained': the general stage distils a pretrained teacher; set it")


def _data(cfg: Config) -> None:
    d = cfg.data
    _check_range("data.max_seq_len", 8 <= d.max_seq_len <= 4096, d.max_seq_len, "8..4096")
    _check_range("data.train_fraction", 0.0 < d.train_fraction <= 1.0, d.train_fraction, "0 < x <= 1")
    _check_range("data.dev_fraction", 0.0 < d.dev_fraction < 0.5, d.dev_fraction, "0 < x < 0.5")
    _check_range("data.test_fraction", 0.0 < d.test_fraction < 0.5, d.test_fraction, "0 < x < 0.5")
    if len(set(d.domains)) != len(d.domains):
        raise UserError(f"config field 'data.domains': duplicate domain in {d.domains!r}")
    _check_range("tokenizer.vocab_size", 100 <= cfg.tokenizer.vocab_size <= 1_000_000, cfg.tokenizer.vocab_size, "100..1000000")
    if cfg.tokenizer.kind == "pretrained" and not cfg.tokenizer.path:
        raise UserError("config field 'tokenizer.path': required when tokenizer.kind is 'pretrained'")


def _models(cfg: Config) -> None:
    for role in ("teacher", "student"):
        m: ModelConfig = getattr(cfg, role)
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            value = getattr(m, key)
            _check_range(f"{role}.{key}", value >= 1, value, ">= 1")
        if not m.pretrained and m.hidden_size % m.num_heads:
            raise UserError(f"config field '{role}.num_heads': {m.num_heads} does not divide {role}.hidden_size={m.hidden_size}")
        _check_range(f"{role}.dropout", 0.0 <= m.dropout < 1.0, m.dropout, "0 <= x < 1")
        if m.init == "pretrained" and not m.pretrained:
            raise UserError(f"config field '{role}.pretrained': required when {role}.init is 'pretrained'")
        if m.pretrained and m.init == "random":
            raise UserError(f"config field '{role}.init': 'random' ignores {role}.pretrained={m.pretrained!r}; set init to 'pretrained'")
    if cfg.student.init == "teacher_layers" and not cfg.student.teacher_layers:
        raise UserError("config field 'student.teacher_layers': required when student.init is 'teacher_layers'")
    if cfg.student.init == "teacher_layers" and not cfg.distill.layer_map:
        cfg.distill.layer_map = list(cfg.student.teacher_layers)  # distil each kept layer against itself


def _graph(cfg: Config) -> None:
    g = cfg.graph
    _check_range("graph.heads", g.heads >= 1, g.heads, ">= 1")
    _check_range("graph.hidden_per_head", g.hidden_per_head >= 0, g.hidden_per_head, ">= 0 (0 = prototype width)")
    _check_range("graph.dropout", 0.0 <= g.dropout < 1.0, g.dropout, "0 <= x < 1")
    _check_range("graph.robust_temperature", g.robust_temperature > 0, g.robust_temperature, "> 0")
    if g.objective == "robust":
        # each of these would make the objective a silent no-op or turn it against the student
        for name, ok, why in (("graph.trainable", g.trainable, "a frozen graph has no objective"),
                              ("graph.residual", g.residual, "without it the weights sit at 1/K with zero gradient"),
                              ("graph.detach_prototypes", g.detach_prototypes,
                               "the reversed gradient would reach the student through its prototypes")):
            if not ok:
                raise UserError(f"config field '{name}': graph.objective=robust needs it true ({why})")
    if g.objective == "meta":  # distill/graph_meta.py
        _check_range("graph.meta_every", g.meta_every >= 1, g.meta_every, ">= 1")
        _check_range("graph.meta_step", 0 < g.meta_step < 1, g.meta_step, "in (0, 1)")
        per_domain = cfg.distill_train.batch_per_domain
        _check_range("graph.meta_rows", 1 <= g.meta_rows < per_domain, g.meta_rows,
                     f">= 1 and < distill_train.batch_per_domain={per_domain} (the other rows carry the layer terms)")
        for name, ok, why in (("graph.trainable", g.trainable, "a frozen graph has no objective"),
                              ("graph.detach_prototypes", g.detach_prototypes,
                               "the graph's surrogate would reach the student through its prototypes"),
                              ("distill.fused", cfg.distill.fused, "the per-domain loop does not implement it")):
            if not ok:
                raise UserError(f"config field '{name}': graph.objective=meta needs it true ({why})")
        if g.attention != "gatv2" and not g.residual:
            raise UserError("config field 'graph.attention': graph.objective=meta needs gatv2 or graph.residual=true "
                            "(the release's GAT keeps the weights at 1/K with zero gradient)")


def _train_and_distill(cfg: Config) -> None:
    _check_range("train.max_nonfinite_steps", cfg.train.max_nonfinite_steps >= 1, cfg.train.max_nonfinite_steps, ">= 1")
    _check_range("train.collective_timeout_s", cfg.train.collective_timeout_s > 0, cfg.train.collective_timeout_s, "> 0 (seconds)")
    _check_range("train.malloc_mmap_threshold_kib", 0 <= cfg.train.malloc_mmap_threshold_kib <= MAX_KIB,
                 cfg.train.malloc_mmap_threshold_kib, f"0..{MAX_KIB} (0: glibc's dynamic default)")
    _check_range("train.malloc_trim_every", cfg.train.malloc_trim_every >= 0, cfg.train.malloc_trim_every, ">= 0 (steps; 0: never)")
    _check_range("distill.temperature", cfg.distill.temperature > 0, cfg.distill.temperature, "> 0")
    _check_range("distill.two_stage_split", 0 < cfg.distill.two_stage_split < 1, cfg.distill.two_stage_split, "in (0, 1)")
    for name, term in cfg.distill.terms.items():  # the names are checked against the registry (distill/term_registry.py)
        _check_range(f"distill.terms.{name}.weight", term.weight >= 0, term.weight, ">= 0 (0 = term off)")
    if cfg.distill.general_skip_cls and cfg.distill.normalization == "reference":
        raise UserError("config field 'distill.general_skip_cls': the reference normalization counts every position; "
                        "use distill.normalization=masked")



def _transfer(cfg: Config) -> None:
    t = cfg.transfer  # the transfer set (data/augment.py) and its cached targets (distill/teacher_targets.py)
    _check_range("transfer.augment_factor", 0 <= t.augment_factor <= 1000, t.augment_factor, "0..1000 (0 = off)")
    for name in ("replace_prob", "mask_prob", "delete_prob"):
        _check_range(f"transfer.{name}", 0.0 <= getattr(t, name) <= 1.0, getattr(t, name), "0 <= p <= 1")
    _check_range("transfer.neighbours", t.neighbours >= 1, t.neighbours, ">= 1")
    _check_range("transfer.max_span", t.max_span >= 1, t.max_span, ">= 1")


def _cross_tokenizer(cfg: Config) -> None:
    """teacher.tokenizer: only what reads the teacher's class logits crosses tokenizers (the loss
    terms are checked against the registry, stages/checks.py); what would feed one model the
    other's token ids is refused here."""
    if not cfg.teacher.tokenizer:
        return
    why = None
    if not cfg.teacher_from:
        why = "needs teacher_from (a teacher trained with that tokenizer, in its own run)"
    elif "general" in cfg.stages:
        why = "stage general would feed the teacher the student's token ids; run it in a run without teacher.tokenizer"
    elif cfg.student.from_teacher:
        why = f"student.init={cfg.student.init} copies the teacher's embeddings, which index the teacher's vocabulary"
    elif cfg.transfer.augment_factor:
        why = "transfer.augment_factor edits token ids with the teacher's embedding neighbours, which index the teacher's vocabulary"
    if why:
        raise UserError(f"config field 'teacher.tokenizer': {why}")


def _schedules(cfg: Config) -> None:
    for key in SCHEDULE_OF_ROLE.values():
        s: StageConfig = getattr(cfg, key)
        _check_range(f"{key}.lr", s.lr > 0, s.lr, "> 0")
        _check_range(f"{key}.epochs", s.epochs > 0, s.epochs, "> 0")
        _check_range(f"{key}.max_steps", s.max_steps >= 0, s.max_steps, ">= 0")
        _check_range(f"{key}.batch_per_domain", s.batch_per_domain >= 1, s.batch_per_domain, ">= 1")
        _check_range(f"{key}.warmup_ratio", 0.0 <= s.warmup_ratio < 1.0, s.warmup_ratio, "0 <= x < 1")
        for every in ("eval_every", "save_every", "log_every"):
            value = getattr(s, every)
            _check_range(f"{key}.{every}", value >= 0, value, ">= 0 (0 = never)")
        if s.epoch_policy == "domain" and not s.epoch_domain:
            raise UserError(f"config field '{key}.epoch_domain': required when epoch_policy is 'domain'")
        if s.epoch_policy == "steps":
            _check_range(f"{key}.steps_per_epoch", s.steps_per_epoch >= 1, s.steps_per_epoch, ">= 1 when epoch_policy is 'steps'")
