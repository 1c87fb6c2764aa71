"""What the domain graph's parameters are trained on, given the weights r (G, K) it outputs and
the per-level, per-domain layer terms T (G, K) those weights multiply.

`loss` (the paper's): the graph minimises sum r T with the student. Once the weights can move at
all (graph.residual) that objective's optimum is all weight on the currently smallest term, and the
graph collapses onto one domain picked by batch noise (docs/RESULTS.md, "The domain graph").

`robust`: the student still minimises sum r T, but the graph maximises
    sum_g [ sum_d r_(g,d) T_(g,d) + tau * mean_d(T_g) * H(r_g) ],
a KL-regularised group-DRO game whose per-level optimum is r_(g,d) proportional to
exp(T_(g,d) / (tau * mean_d T_g)): the domains the student matches worst get more weight, softly,
and scaling tau by the level's mean term makes tau free of the terms' units. The reversal is
`2 r.detach() - r`, the value r exactly (Sterbenz) and the gradient negated, so the loss's value
and the student's gradient are the same as under `loss`; the entropy bonus is added as
`bonus - bonus.detach()`, zero in value. No custom autograd function: torch.compile traces it.

`meta`: the student still minimises sum r T (r detached there), while the graph descends
-sum r A, A (G, K) the alignment of each level's and domain's distillation gradient with a held-out
batch's gradient (graph_meta.py, which measures it into the graph's `alignment` buffer), added as
`s - s.detach()`, zero in value: the loss's value and the student's gradient are those of `loss`.
"""

from __future__ import annotations

import torch


def reversed_for_graph(weights: torch.Tensor) -> torch.Tensor:
    """The weights' value, with the gradient that reaches the graph through them negated."""
    return 2 * weights.detach() - weights


def entropy_bonus(weights: torch.Tensor, layer_terms: torch.Tensor, temperature: float) -> torch.Tensor:
    """Zero-valued term whose gradient makes the graph (through reversed weights) raise entropy."""
    scale = temperature * layer_terms.detach().mean(dim=-1)  # (G,)
    entropy = -(weights * weights.clamp_min(torch.finfo(weights.dtype).tiny).log()).sum(dim=-1)  # (G,)
    bonus = (scale * entropy).sum()
    return bonus - bonus.detach()


def alignment_surrogate(weights: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor:
    """Zero-valued term whose gradient makes the graph descend -sum r A (raise the aligned weights)."""
    s = -(weights * alignment.to(weights.dtype)).sum()
    return s - s.detach()


def weighted_layer_sum(weights: torch.Tensor, layer_terms: torch.Tensor, objective: str, temperature: float,
                       graph=None) -> torch.Tensor:
    """sum_(g,d) r T under the graph objective `objective` (the value is the same for all);
    `graph`: the DomainGraph, whose alignment buffer `meta` reads."""
    if objective == "loss":
        return (weights * layer_terms).sum()
    if objective == "meta":
        return (weights.detach() * layer_terms).sum() + alignment_surrogate(weights, graph.alignment)
    rev = reversed_for_graph(weights)
    return (rev * layer_terms).sum() + entropy_bonus(rev, layer_terms, temperature)
