"""HRKD distillation: loss terms, domain graph, fused relational loss and its loop reference."""

from hrkd_ds.distill.graph import DomainGraph
from hrkd_ds.distill.layer_map import resolve_layer_map
from hrkd_ds.distill.terms import soft_cross_entropy
from hrkd_ds.distill.reference_loss import ReferenceDistillLoss
from hrkd_ds.distill.relational_loss import DistillLossOutput, RelationalDistillLoss, RelationalParams

__all__ = [
    "DistillLossOutput",
    "DomainGraph",
    "ReferenceDistillLoss",
    "RelationalDistillLoss",
    "RelationalParams",
    "resolve_layer_map",
    "soft_cross_entropy",
]
