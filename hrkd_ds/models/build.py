"""Building a `MultiDomainClassifier`: random from the configured sizes, a local pretrained model
with the run's K*C head, or a student made from the teacher's layers (copied at the teacher's
widths, or weights selected at narrower sizes: models/student_init.py)."""

from __future__ import annotations

import copy

from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

from hrkd_ds.errors import UserError
from hrkd_ds.models.attention import register_attention
from hrkd_ds.models.checks import check_fit, check_model_dir
from hrkd_ds.models.encoder import MultiDomainClassifier, annotate_config
from hrkd_ds.models.student_init import (
    check_teacher_layers_fit,
    check_teacher_select_fit,
    copy_teacher_layers,
    select_teacher_weights,
    teacher_widths,
)


def _names(names: list[str] | None, count: int, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i}" for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{len(names)} {prefix} names given for {count} {prefix}s")
    return list(names)


def _from_teacher(model_cfg, teacher, vocab_size: int, pad_id: int, max_seq_len: int, dropout: dict, domains: list[str],
                  labels: list[str], impl: str):
    """A student built from the teacher: its layers at the teacher's widths (teacher_layers), or
    weights selected from them at the configured, narrower sizes (teacher_select)."""
    if teacher is None:
        raise UserError(f"student.init={model_cfg.init} needs the teacher model")
    t_cfg = teacher.config
    check_fit(t_cfg, vocab_size, pad_id, max_seq_len, f"student.init={model_cfg.init}")
    hf_config = copy.deepcopy(t_cfg)
    if model_cfg.init == "teacher_layers":  # the teacher's widths, fewer layers
        check_teacher_layers_fit(model_cfg, t_cfg.num_hidden_layers, teacher_widths(t_cfg))
        shape = {"num_hidden_layers": len(model_cfg.teacher_layers)}
    else:  # the configured, narrower sizes
        check_teacher_select_fit(model_cfg, t_cfg.num_hidden_layers, teacher_widths(t_cfg))
        shape = {"num_hidden_layers": model_cfg.num_layers, "hidden_size": model_cfg.hidden_size,
                 "num_attention_heads": model_cfg.num_heads, "intermediate_size": model_cfg.intermediate_size}
    hf_config.update({**dropout, **shape})
    annotate_config(hf_config, domains, labels)
    hf = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation=impl)
    fill = copy_teacher_layers if model_cfg.init == "teacher_layers" else select_teacher_weights
    fill(hf, teacher.hf_model, model_cfg.teacher_layers)
    return hf


def pretrained_config(model_cfg, vocab_size: int, pad_id: int, max_seq_len: int, domains: list[str], labels: list[str]):
    """The HF config a `pretrained` model is built with: its own, the configured dropout, checked
    against the run's tokenizer and length, with the run's K*C head (also the general stage's
    partitioned teacher's, models/loading.load_partitioned)."""
    check_model_dir(model_cfg.pretrained, "teacher/student.pretrained")  # train.py names the exact field earlier
    dropout = {"hidden_dropout_prob": model_cfg.dropout, "attention_probs_dropout_prob": model_cfg.dropout}
    hf_config = AutoConfig.from_pretrained(model_cfg.pretrained, **dropout)
    check_fit(hf_config, vocab_size, pad_id, max_seq_len, f"pretrained model {model_cfg.pretrained}")
    annotate_config(hf_config, domains, labels)
    return hf_config


def build_model(
    model_cfg,
    num_domains: int,
    num_labels: int,
    vocab_size: int,
    pad_id: int,
    max_seq_len: int,
    attention: str = "scores",
    teacher: MultiDomainClassifier | None = None,
    *,
    domains: list[str] | None = None,
    labels: list[str] | None = None,
) -> MultiDomainClassifier:
    """Build a K*C-output encoder: pretrained weights, teacher layers, or random init from sizes.

    - `model_cfg.init == "teacher_layers"`: teacher width, the listed teacher layers copied.
    - `model_cfg.init == "teacher_select"`: the configured (narrower) sizes, weights selected from
      the listed teacher layers (models/student_init.py).
    - otherwise `model_cfg.pretrained` set: HF weights from that local dir, fresh classifier.
    - otherwise: random BERT from `model_cfg` sizes, `vocab_size`, positions = `max_seq_len`.
    """
    impl = register_attention()
    domains = _names(domains, num_domains, "domain")
    labels = _names(labels, num_labels, "label")
    dropout = {"hidden_dropout_prob": model_cfg.dropout, "attention_probs_dropout_prob": model_cfg.dropout}
    if model_cfg.from_teacher:
        hf = _from_teacher(model_cfg, teacher, vocab_size, pad_id, max_seq_len, dropout, domains, labels, impl)
    elif model_cfg.pretrained:
        hf_config = pretrained_config(model_cfg, vocab_size, pad_id, max_seq_len, domains, labels)
        hf = AutoModelForSequenceClassification.from_pretrained(
            model_cfg.pretrained, config=hf_config, attn_implementation=impl, ignore_mismatched_sizes=True, use_safetensors=True
        )
    else:
        hf_config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=model_cfg.hidden_size,
            num_hidden_layers=model_cfg.num_layers,
            num_attention_heads=model_cfg.num_heads,
            intermediate_size=model_cfg.intermediate_size,
            max_position_embeddings=max_seq_len,
            type_vocab_size=2,
            pad_token_id=pad_id,
            **dropout,
        )
        annotate_config(hf_config, domains, labels)
        hf = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation=impl)
    return MultiDomainClassifier(hf, attention=attention)
