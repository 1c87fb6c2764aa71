"""hrkd-ds: Hierarchical Relational Knowledge Distillation on DeepSpeed."""

__version__ = "0.1.0"
