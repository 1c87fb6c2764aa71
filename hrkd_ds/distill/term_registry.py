"""The loss-term registry: every distillation term declares, in its own module, its name, where it
enters the total (docs/METHOD.md, "Total loss"), what it reads, and two implementations: the fused
form over a whole domain-major episode and the reference form over one domain's rows.

The fused loss (relational_loss.py) and the loop reference (reference_loss.py) both iterate this
registry, so a new term is one module in `hrkd_ds/distill/loss_terms/` (found and imported there)
plus its test; its weight is configuration (`distill.terms.<name>.weight`), so a logit-only or
hidden-only recipe needs no code. The two forms stay independent implementations: tests hold them
equal in float64.

Where a term enters the total:
- `embedding`: level 0 of the graph-weighted sum, fused (1, K), reference a scalar per domain;
- `layers`: levels 1..L of the graph-weighted sum, fused (L, K), reference (L,) per domain;
- `domain`: (1/K) sum_d, not graph-weighted, fused (K,), reference a scalar per domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from hrkd_ds.distill.normalization import LossMasks
from hrkd_ds.errors import UserError

Level = Literal["embedding", "layers", "domain"]
READS = ("hidden", "attentions", "pooled", "teacher_logits", "labels")  # what a term may need computed for it


@dataclass
class Episode:
    """A whole domain-major episode (K*B rows) as the fused forms read it; teacher tensors are in
    the student's dtype, `projected[g]` is W_g applied to the student's level-g states (None when
    no term reads hidden states)."""

    num_domains: int
    student: object  # EncoderOutputs: embeddings, hidden_states, attentions, logits
    teacher_hidden: list[torch.Tensor]  # L+1: teacher embeddings + the mapped layers' states
    teacher_attentions: list[torch.Tensor]  # L mapped maps ([] when no term reads attentions)
    teacher_logits: torch.Tensor | None
    projected: list[torch.Tensor] | None
    masks: LossMasks  # what the MSEs count and divide by (normalization.py)
    hidden_masks: LossMasks  # the same, position 0 left out when distill.general_skip_cls
    labels: torch.Tensor | None
    temperature: float
    compiled: bool  # distill.compiled_terms
    teacher_pooled: torch.Tensor | None = None  # (N, Ht): the teacher's last layer at position 0, when a term reads "pooled"
    pooled_projected: torch.Tensor | None = None  # (N, Ht): W_p applied to the student's last layer at position 0


@dataclass
class DomainRows:
    """One domain's rows as the reference forms read them (B rows, every tensor sliced)."""

    student_attentions: list[torch.Tensor]  # L
    student_logits: torch.Tensor
    teacher_hidden: list[torch.Tensor]  # L+1
    teacher_attentions: list[torch.Tensor]  # L
    teacher_logits: torch.Tensor | None
    projected: list[torch.Tensor]  # L+1
    attention_mask: torch.Tensor  # (B, T)
    hidden_attention: torch.Tensor  # (B, T): position 0 zeroed when distill.general_skip_cls
    labels: torch.Tensor | None
    normalization: str
    temperature: float
    teacher_pooled: torch.Tensor | None = None  # (B, Ht)
    student_pooled: torch.Tensor | None = None  # (B, Hs): unprojected; the reference form projects it
    pool_projection: torch.nn.Module | None = None  # W_p


@dataclass(frozen=True)
class LossTerm:
    """One registered term: see the module docstring for `level`; `order` fixes the summation
    order in the total (so registering a term never reorders the others' floating-point sums)."""

    name: str
    level: Level
    fused: Callable[[Episode], torch.Tensor]
    reference: Callable[[DomainRows], torch.Tensor]
    reads: frozenset[str]
    order: int
    default_weight: float = 1.0
    task_head: bool = False  # reads the task logits: off in label-free stages (general distillation)
    doc: str = ""  # one line: the equation's name in docs/METHOD.md


REGISTRY: dict[str, LossTerm] = {}


def register(term: LossTerm) -> LossTerm:
    """Add `term` under its name (a name is registered once) and return it."""
    unknown = set(term.reads) - set(READS)
    if unknown:
        raise ValueError(f"loss term {term.name!r} reads {sorted(unknown)}, not among {READS}")
    if term.name in REGISTRY and REGISTRY[term.name] is not term:
        raise ValueError(f"loss term {term.name!r} is already registered")
    REGISTRY[term.name] = term
    return term


def unregister(name: str) -> None:
    """Remove a term (tests that register a toy term clean up after themselves)."""
    REGISTRY.pop(name, None)


def registered() -> list[LossTerm]:
    """Every term, in summation order (the built-in terms are imported on first use)."""
    import hrkd_ds.distill.loss_terms  # noqa: F401  registers the built-in terms

    return sorted(REGISTRY.values(), key=lambda t: (t.order, t.name))


def check_terms(weights: dict) -> None:
    """`distill.terms` names registered terms only (one line naming the field otherwise)."""
    names = {t.name for t in registered()}
    for name in weights:
        if name not in names:
            raise UserError(f"config field 'distill.terms.{name}': no such loss term "
                            f"(registered: {', '.join(sorted(names))})")


def active_terms(weights: dict, task_head: bool = True) -> list[tuple[LossTerm, float]]:
    """(term, weight) for every term with a non-zero weight: `weights` maps a name to an object
    with `.weight` (config's TermConfig) or to a number, and overrides the term's default;
    `task_head=False` (a label-free stage) drops the terms that read the task logits."""
    check_terms(weights)
    out = []
    for term in registered():
        w = weights.get(term.name)
        w = term.default_weight if w is None else float(getattr(w, "weight", w))
        if not math.isfinite(w) or w < 0:
            raise UserError(f"config field 'distill.terms.{term.name}.weight': {w!r} is out of range (>= 0)")
        if w and (task_head or not term.task_head):
            out.append((term, w))
    return out


TOKEN_LEVEL = frozenset({"hidden", "attentions"})  # reads indexed by token position


def refuse_token_level(weights: dict, task_head: bool, method: str) -> None:
    """Across tokenizers (teacher.tokenizer) position t of the teacher's rows is not position t of
    the student's, so a term that reads per-token states or maps has no meaning: one line naming
    the setting and the terms. Logit-level terms (pred, kl, ce) and the pooled one (pool: each
    model's own position 0) cross tokenizers."""
    bad = [t.name for t, _ in active_terms(weights, task_head) if t.reads & TOKEN_LEVEL]
    if bad:
        raise UserError(f"config field 'teacher.tokenizer': distill.method={method} has token-level terms ({', '.join(bad)}) "
                        "whose positions do not correspond across tokenizers; use distill.method=logit-kd, or set "
                        + " ".join(f"distill.terms.{n}.weight=0" for n in bad))


def weighted(value: torch.Tensor, weight: float) -> torch.Tensor:
    """`weight * value`, with weight 1 left out so the default recipe's floating point is unchanged."""
    return value if weight == 1.0 else weight * value
