"""Encoders for HRKD: multi-domain HF classifiers exposing embeddings, hidden states, attention maps."""

from hrkd_ds.models.attention import ATTN_IMPLEMENTATION, register_attention
from hrkd_ds.models.build import build_model
from hrkd_ds.models.encoder import EncoderOutputs, MultiDomainClassifier
from hrkd_ds.models.student_init import copy_teacher_layers

__all__ = [
    "ATTN_IMPLEMENTATION",
    "EncoderOutputs",
    "MultiDomainClassifier",
    "build_model",
    "copy_teacher_layers",
    "register_attention",
]
