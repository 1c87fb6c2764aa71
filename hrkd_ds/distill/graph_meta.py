"""graph.objective=meta: the graph learns weights under which the student's update helps held-out
examples of every domain (docs/METHOD.md, "What the graph is trained on").

theta: the student's parameters; T_(g,d): the layer terms the weights r_(g,d) multiply; L_h: the
held-out rows' task loss, sum_d CE_d. One SGD step theta' = theta - eta sum r T gives
    d L_h(theta') / d r_(g,d) = -eta <grad L_h(theta'), grad T_(g,d)(theta)>
                              ~ -eta A_(g,d),   A_(g,d) = <grad L_h(theta), grad T_(g,d)(theta)>
(first order: the held-out gradient at theta, not theta'). The graph descends -sum r A
(graph_objective.py); eta > 0 only scales the graph's gradient, so it is left out.

A is the directional derivative of T along v = grad L_h, all G*K entries from one central
difference: A = (T(theta + eps v) - T(theta - eps v)) / (2 eps), eps = meta_step ||theta|| / ||v||
(a relative step of meta_step). Cost: a held-out forward+backward on K*meta_rows rows and two
no-grad student forwards on the others, with the loss terms; nothing of it touches .grad or the
optimizer (torch.autograd.grad, torch.func.functional_call), so DeepSpeed sees one ordinary step.

Held-out rows: the last `graph.meta_rows` rows of each domain's block of the episode (a slice of
the training data, never dev or test): A pairs the held-out rows' gradient with the layer terms of
the episode's other rows, so the two gradients come from disjoint examples. The split is a function
of the episode, which the sampler replays on resume; the alignment and the step counter are buffers
of the graph, saved and restored with the module: a resumed run measures at the same steps and
trains on the same alignment. Every forward here runs in eval mode (no dropout, no random draw).
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from hrkd_ds.distill.loss_terms.labels import per_domain_ce
from hrkd_ds.models.encoder import EncoderOutputs

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "domain_ids")


def split_rows(num_rows: int, num_domains: int, held: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(other rows, held-out rows) of a domain-major episode: the last `held` of each domain's block."""
    B = num_rows // num_domains
    if not 0 < held < B:
        raise ValueError(f"graph.meta_rows={held} needs 0 < meta_rows < the {B} rows per domain per rank")
    idx = torch.arange(num_rows, device=device).view(num_domains, B)
    return idx[:, : B - held].reshape(-1), idx[:, B - held:].reshape(-1)


def select_rows(out, rows: torch.Tensor) -> EncoderOutputs:
    """An encoder output restricted to `rows` (None where a layer was not returned)."""
    pick = (lambda t: None if t is None else t.index_select(0, rows))
    return EncoderOutputs(logits=pick(out.logits), all_logits=pick(getattr(out, "all_logits", None)),
                          embeddings=pick(out.embeddings),
                          hidden_states=tuple(map(pick, out.hidden_states)) if out.hidden_states is not None else None,
                          attentions=tuple(map(pick, out.attentions)) if out.attentions is not None else None)


def layer_terms(loss, logs: dict[str, torch.Tensor], levels: int) -> torch.Tensor:
    """(G, K) sum_t w_t L_t,g,d of the layer-wise terms, rebuilt from the loss's logged terms."""
    total = None
    for term, w in loss.terms:
        if term.level == "domain":
            continue
        value = logs[term.name]
        part = w * loss._place(term.level, value[None] if term.level == "embedding" else value, levels)
        total = part if total is None else total + part
    return total


def _batch_rows(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    n = batch["attention_mask"].shape[0]
    return {k: v.index_select(0, rows) if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v for k, v in batch.items()}


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def measure_alignment(student, loss, teacher_out, batch: dict[str, torch.Tensor], num_domains: int,
                      held: int, rel_step: float) -> torch.Tensor:
    """A (G, K): each level's and domain's layer-term gradient against the held-out rows' gradient."""
    K = num_domains
    other, held_rows = split_rows(batch["attention_mask"].shape[0], K, held, batch["attention_mask"].device)
    names, params = zip(*[(n, p) for n, p in student.named_parameters() if p.requires_grad])
    was_training = student.training
    student.eval()
    try:
        h = _batch_rows(batch, held_rows)
        with torch.enable_grad():
            ce = per_domain_ce(student(**_inputs(h)).logits, h["labels"], K).sum()
            grads = torch.autograd.grad(ce, params, allow_unused=True)
        used = [(n, p, g) for n, p, g in zip(names, params, grads) if g is not None]
        with torch.no_grad():
            v_norm = math.sqrt(sum(float(g.double().pow(2).sum()) for _, _, g in used))
            theta_norm = math.sqrt(sum(float(p.double().pow(2).sum()) for _, p, _ in used))
            a = _batch_rows(batch, other)
            t_a = select_rows(teacher_out, other)
            G = len(loss.params.projections)
            if v_norm == 0.0:
                return torch.zeros(G, K, dtype=torch.float32, device=a["attention_mask"].device)
            eps = rel_step * theta_norm / v_norm
            ends = []
            for sign in (1.0, -1.0):
                moved = {n: p + (sign * eps) * g for n, p, g in used}
                s_a = functional_call(student, moved, (), {**_inputs(a), "output_internals": True})
                out = loss(s_a, t_a, a["attention_mask"], K, labels=a.get("labels"))
                ends.append(layer_terms(loss, out.terms, G))
            return ((ends[0] - ends[1]) / (2 * eps)).float()
    finally:
        student.train(was_training)


def refresh_alignment(student, loss, teacher_out, batch: dict[str, torch.Tensor], num_domains: int) -> None:
    """Re-measure the graph's alignment buffer when it is due (every graph.meta_every calls in
    training); a no-op for any other objective, outside training and where no term is graph-weighted."""
    graph = getattr(loss.params, "graph", None)
    if graph is None or loss.params.objective != "meta" or not loss.training or not loss.layer_terms:
        return
    due = int(graph.meta_calls) % graph.meta_every == 0
    graph.meta_calls += 1
    if due:
        A = measure_alignment(student, loss, teacher_out, batch, num_domains, graph.meta_rows, graph.meta_step)
        graph.alignment.copy_(A.to(graph.alignment.dtype))
