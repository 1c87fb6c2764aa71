"""Student initialisation from chosen teacher layers.

- `teacher_layers` (DeepSpeed layer-reduction style): the student keeps the teacher's width
  (hidden size, heads, FFN) and a subset of its layers: embeddings, the listed 1-based teacher
  layers in order, and the pooler are copied.
- `teacher_select` (weight selection): a narrower student takes, in every matrix of those
  layers, an evenly spaced subset of the teacher's dimensions.

Either way the classifier stays freshly initialised (the caller builds it for K*C outputs).

The teacher may be a ZeRO-3 partitioned one (models/loading.load_partitioned): then each teacher
part is gathered on its own (`gathered`: the embeddings, one layer, the pooler), copied from and
released, so no rank ever holds more of the teacher than its partition plus one layer.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from hrkd_ds.errors import UserError


def gathered(part: nn.Module):
    """Read access to one teacher part's full parameters: a ZeRO-3 gather of that part only (every
    rank takes part), released on exit; a plain context for an unpartitioned teacher."""
    params = [p for p in part.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed  # only a partitioned teacher needs it

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def base_model(hf_model: nn.Module) -> nn.Module:
    """The encoder inside a `*ForSequenceClassification` (e.g. `.bert`)."""
    return getattr(hf_model, hf_model.base_model_prefix)


def check_teacher_layers(layers: list[int], teacher_num_layers: int) -> None:
    """Reject empty, out-of-range (1-based) layer lists with a message naming the field."""
    if not layers:
        raise UserError("config field 'student.teacher_layers': empty")
    bad = [i for i in layers if not 1 <= i <= teacher_num_layers]
    if bad:
        raise UserError(f"config field 'student.teacher_layers': {bad} outside 1..{teacher_num_layers} (teacher depth)")


def check_teacher_layers_fit(model_cfg, teacher_layers: int, teacher_widths: dict[str, int]) -> None:
    """A student built from teacher layers keeps the teacher's widths: the one check of that rule.

    `teacher_widths` maps the student config's fields (hidden_size, num_heads, intermediate_size)
    to the teacher's values."""
    check_teacher_layers(model_cfg.teacher_layers, teacher_layers)
    for ours, theirs in teacher_widths.items():
        if getattr(model_cfg, ours) != theirs:
            raise UserError(f"config field 'student.{ours}': {getattr(model_cfg, ours)} must equal the teacher's {theirs} "
                            "when student.init is 'teacher_layers'")


def check_teacher_select_fit(model_cfg, teacher_layers: int, teacher_widths: dict[str, int]) -> None:
    """A student selected from teacher weights has one teacher layer per layer and is no wider."""
    check_teacher_layers(model_cfg.teacher_layers, teacher_layers)
    if len(model_cfg.teacher_layers) != model_cfg.num_layers:
        raise UserError(f"config field 'student.teacher_layers': {len(model_cfg.teacher_layers)} layers listed, "
                        f"student.num_layers is {model_cfg.num_layers}")
    for ours, theirs in teacher_widths.items():
        if getattr(model_cfg, ours) > theirs:
            raise UserError(f"config field 'student.{ours}': {getattr(model_cfg, ours)} is wider than the teacher's {theirs}; "
                            "student.init 'teacher_select' (and student.general_init) only narrows: use 'random'")


def teacher_widths(hf_config) -> dict[str, int]:
    """The widths a teacher-layers student must share, keyed by the student config's field names."""
    return {"hidden_size": hf_config.hidden_size, "num_heads": hf_config.num_attention_heads,
            "intermediate_size": hf_config.intermediate_size}


@torch.no_grad()
def copy_teacher_layers(student_hf: nn.Module, teacher_hf: nn.Module, layers: list[int]) -> None:
    """Copy embeddings, teacher layers `layers` (1-based) and pooler into the student, in place.
    The student was built with the teacher's widths (`check_teacher_layers_fit`)."""
    s_cfg, t_cfg = student_hf.config, teacher_hf.config
    check_teacher_layers(layers, t_cfg.num_hidden_layers)
    if len(layers) != s_cfg.num_hidden_layers:
        raise UserError(f"config field 'student.teacher_layers': {len(layers)} layers listed, student has {s_cfg.num_hidden_layers}")
    s, t = base_model(student_hf), base_model(teacher_hf)
    pairs = [(s.embeddings, t.embeddings)] + [(s.encoder.layer[i], t.encoder.layer[j - 1]) for i, j in enumerate(layers)]
    if getattr(s, "pooler", None) is not None and getattr(t, "pooler", None) is not None:
        pairs.append((s.pooler, t.pooler))
    for dst, src in pairs:
        with gathered(src):
            dst.load_state_dict(src.state_dict())


def _spread(n: int, k: int) -> torch.Tensor:
    """k of n indices, evenly spaced and sorted: the same choice wherever a dimension recurs."""
    if k > n:
        raise UserError(f"a student width of {k} is wider than the teacher's {n}; init 'teacher_select' only narrows")
    return torch.linspace(0, n - 1, k).round().long()


def _head_dims(t_heads: int, t_dim: int, s_heads: int, s_dim: int) -> torch.Tensor:
    """The attention dimensions kept: s_heads of the teacher's heads, s_dim of each kept head's dims."""
    heads = _spread(t_heads, s_heads)
    return (heads[:, None] * t_dim + _spread(t_dim, s_dim)[None, :]).reshape(-1)


@torch.no_grad()
def select_teacher_weights(student_hf: nn.Module, teacher_hf: nn.Module, layers: list[int]) -> None:
    """Start a narrower student from a selection of the teacher's weights, in place.

    Weight selection (Xu et al., ICLR 2024): teacher layers `layers` (1-based), and in every
    matrix the rows and columns of the kept dimensions, one choice per dimension kind used
    everywhere (the residual stream's, each head's, the FFN's), so the student is a consistent
    sub-network of the teacher rather than a random one. In the reproduction grid this student
    learns the task directly, while a general stage from these weights (as from random ones) left
    it unable to (docs/RESULTS.md, "Status")."""
    s_cfg, t_cfg = student_hf.config, teacher_hf.config
    check_teacher_layers(layers, t_cfg.num_hidden_layers)
    if len(layers) != s_cfg.num_hidden_layers:
        raise UserError(f"config field 'student.teacher_layers': {len(layers)} layers listed, student has {s_cfg.num_hidden_layers}")
    hid = _spread(t_cfg.hidden_size, s_cfg.hidden_size)
    ffn = _spread(t_cfg.intermediate_size, s_cfg.intermediate_size)
    att = _head_dims(t_cfg.num_attention_heads, t_cfg.hidden_size // t_cfg.num_attention_heads,
                     s_cfg.num_attention_heads, s_cfg.hidden_size // s_cfg.num_attention_heads)
    s, t = base_model(student_hf), base_model(teacher_hf)

    def take(dst: nn.Module, src: nn.Module, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
        for name, p in dst.named_parameters(recurse=False):
            w = getattr(src, name)
            if rows is not None:
                w = w.index_select(0, rows)
            if cols is not None and w.dim() == 2:
                w = w.index_select(1, cols)
            if w.shape != p.shape:
                raise UserError(f"init 'teacher_select': teacher {name} {tuple(w.shape)} does not fit the student's {tuple(p.shape)}")
            p.copy_(w)

    se, te = s.embeddings, t.embeddings
    with gathered(te):
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            src, dst = getattr(te, name).weight, getattr(se, name).weight
            if src.shape[0] < dst.shape[0]:
                raise UserError(f"init 'teacher_select': the teacher's {name} has {src.shape[0]} rows, the student needs {dst.shape[0]}")
            dst.copy_(src[: dst.shape[0]].index_select(1, hid))
        take(se.LayerNorm, te.LayerNorm, hid, None)
    for i, j in enumerate(layers):
        sl, tl = s.encoder.layer[i], t.encoder.layer[j - 1]
        with gathered(tl):
            for name in ("query", "key", "value"):
                take(getattr(sl.attention.self, name), getattr(tl.attention.self, name), att, hid)
            take(sl.attention.output.dense, tl.attention.output.dense, hid, att)
            take(sl.attention.output.LayerNorm, tl.attention.output.LayerNorm, hid, None)
            take(sl.intermediate.dense, tl.intermediate.dense, ffn, hid)
            take(sl.output.dense, tl.output.dense, hid, ffn)
            take(sl.output.LayerNorm, tl.output.LayerNorm, hid, None)
    if getattr(s, "pooler", None) is not None and getattr(t, "pooler", None) is not None:
        with gathered(t.pooler):
            take(s.pooler.dense, t.pooler.dense, hid, hid)
