"""Student initialisation from chosen teacher layers (DeepSpeed layer-reduction style).

The student keeps the teacher's width (hidden size, heads, FFN) and a subset of its layers:
embeddings, the listed 1-based teacher layers in order, and the pooler are copied; the
classifier stays freshly initialised (the caller builds it for K*C outputs).
"""

from __future__ import annotations

import torch
from torch import nn

from hrkd_ds.errors import UserError

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
    s.embeddings.load_state_dict(t.embeddings.state_dict())
    for i, j in enumerate(layers):
        s.encoder.layer[i].load_state_dict(t.encoder.layer[j - 1].state_dict())
    if getattr(s, "pooler", None) is not None and getattr(t, "pooler", None) is not None:
        s.pooler.load_state_dict(t.pooler.state_dict())
