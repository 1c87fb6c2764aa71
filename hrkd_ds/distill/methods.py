"""The one place that knows the distillation methods: what each needs and which module it trains.

A method is a row in `METHODS`: whether it needs the teacher, which graph config its relational
loss gets (None: no distillation loss, labels only), whether the loss has the task-head terms, its
own default term weights (under the user's `distill.terms`) and whether it trains in two phases.
`kd` is HRKD with the graph off, i.e. uniform 1/K domain weights (TinyBERT-KD); `logit-kd` is the
soft-target recipe most toolkits start from (tau^2 KL plus the labels, no layer-wise terms);
`two-stage` is TinyBERT's task distillation (the layer-wise terms, then the prediction layer);
`general` is TinyBERT's task-agnostic stage (layer-wise terms only, no labels, no task head), run by
the `general` stage rather than chosen as `distill.method`. A new method is a new row; a new loss
term is a new module in distill/loss_terms/ (term_registry.py); nothing else dispatches on either
name (docs/METHOD.md, "Recipes").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from hrkd_ds.config import DistillConfig, GraphConfig
from hrkd_ds.distill.loss_terms.labels import per_domain_ce
from hrkd_ds.distill.reference_loss import ReferenceDistillLoss
from hrkd_ds.distill.relational_loss import RelationalDistillLoss
from hrkd_ds.distill.step import RAW, StepOutput, distill_step, model_inputs


class SupervisedModule(nn.Module):
    """Stage 1 (meta-teacher) and the `none` baseline: sum over domains of per-domain CE."""

    def __init__(self, model: nn.Module, num_domains: int) -> None:
        super().__init__()
        self.model = model
        self.num_domains = num_domains

    def forward(self, batch: dict[str, torch.Tensor], teacher=None, predict: bool = False, progress: float = 0.0):
        out = self.model(**model_inputs(batch))
        if predict:
            return out.logits
        ce = per_domain_ce(out.logits, batch["labels"], self.num_domains)
        return StepOutput(loss=ce.sum(), logs={"ce": ce.detach()})


class DistillModule(nn.Module):
    """Stage 2: the whole distillation step (distill/step.py) inside the student's engine.

    The loss (projections, domain graph) sits inside the engine's module so DeepSpeed optimises,
    partitions and checkpoints its parameters with the student's. The frozen teacher is passed in
    per call, never held as a submodule: it is its own (ZeRO-3 inference) engine.
    """

    log_layout = {"weights": RAW, "ratios": RAW, "alignment": RAW}  # alignment: graph.objective=meta only

    def __init__(self, student: nn.Module, loss: nn.Module, num_domains: int, switch: float | None = None) -> None:
        super().__init__()
        self.model = student
        self.loss = loss
        self.num_domains = num_domains
        self.switch = switch  # two-stage: the share of the stage's steps in the first phase

    def forward(self, batch: dict[str, torch.Tensor], teacher=None, predict: bool = False, progress: float = 0.0):
        """`progress`: the share of the stage's optimizer steps done before this one (engine/loop.py)."""
        if predict:
            return self.model(**model_inputs(batch)).logits
        if self.switch is not None:
            self.loss.use_phase(0 if progress < self.switch else 1)
        return distill_step(self.model, teacher, self.loss, batch, self.num_domains)


@dataclass(frozen=True)
class Method:
    """What a method means: teacher needed, the graph its loss uses (None: no loss), task-head
    terms, its default term weights (the user's `distill.terms` override them) and two phases."""

    uses_teacher: bool
    graph: Callable[[GraphConfig], GraphConfig] | None
    prediction: bool = True
    terms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # TinyBERT's two-step task distillation: the layer-wise terms for the first `distill.two_stage_split`
    # of the stage's steps, then the per-domain (prediction-layer) terms for the rest
    two_stage: bool = False


def _uniform(g: GraphConfig) -> GraphConfig:
    return dataclasses.replace(g, enabled=False)


# logit-kd: (1 - alpha) CE + alpha tau^2 KL with alpha = 0.5 (torchtune's kd_ratio default), no layer-wise terms
LOGIT_KD_TERMS = {"emb": 0.0, "att": 0.0, "hid": 0.0, "pred": 0.0, "kl": 0.5, "ce": 0.5}

METHODS: dict[str, Method] = {
    "hrkd": Method(uses_teacher=True, graph=lambda g: g),
    "kd": Method(uses_teacher=True, graph=_uniform),
    "logit-kd": Method(uses_teacher=True, graph=_uniform, terms=LOGIT_KD_TERMS),
    "two-stage": Method(uses_teacher=True, graph=_uniform, two_stage=True),
    "none": Method(uses_teacher=False, graph=None),
    "general": Method(uses_teacher=True, graph=_uniform, prediction=False),
}


def term_weights(spec: Method, distill_cfg: DistillConfig) -> dict:
    """The method's term weights with the user's `distill.terms` over them."""
    return {**spec.terms, **distill_cfg.terms}


def method(name: str) -> Method:
    return METHODS[name]


def build_step_module(name: str, student: nn.Module, teacher: nn.Module | None, num_domains: int,
                      graph_cfg: GraphConfig, distill_cfg: DistillConfig) -> nn.Module:
    """The module the student's DeepSpeed engine wraps for method `name`."""
    spec = METHODS[name]
    if spec.graph is None:
        return SupervisedModule(student, num_domains)
    loss_cls = RelationalDistillLoss if distill_cfg.fused else ReferenceDistillLoss
    distill_cfg = dataclasses.replace(distill_cfg, terms=term_weights(spec, distill_cfg))
    loss = loss_cls.from_config(student, teacher, num_domains, spec.graph(graph_cfg), distill_cfg, prediction=spec.prediction,
                                two_stage=spec.two_stage)
    loss.request_internals(student, teacher)
    return DistillModule(student, loss, num_domains, distill_cfg.two_stage_split if spec.two_stage else None)
