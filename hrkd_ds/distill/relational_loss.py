"""HRKD relational distillation loss, fused: all domains and layers in batched ops, one backward.

Total loss (docs/METHOD.md, "Total loss"), inputs domain-major (K*B rows):
    L = sum_d [ sum_g r_(g,d) sum_t w_t L_t,g,d + (1/K) sum_t' w_t' L_t',d ]
over the registered terms (term_registry.py): the layer-wise ones t (embedding at level 0;
attention and hidden at levels 1..L) weighted by the domain graph's r (uniform 1/K when
graph.enabled is off, i.e. the KD baseline), the per-domain ones t' (soft logits, labels) not;
w_t from `distill.terms.<name>.weight`. What the graph itself is trained on is `graph.objective`
(graph_objective.py).

The big terms (attention maps, projected hidden states) go through `MaskedSquaredErrorSums`:
each big tensor is read once forward and once backward, and the gradient written once. The
per-domain loop in reference_loss.py computes the same numbers from each term's reference form
and is kept for tests and the benchmark; both take the same `RelationalParams` so they can be
compared weight for weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from hrkd_ds.distill.graph import DomainGraph
from hrkd_ds.distill.graph_objective import weighted_layer_sum
from hrkd_ds.distill.layer_map import resolve_layer_map
from hrkd_ds.distill.normalization import loss_masks, without_first_token
from hrkd_ds.distill.term_registry import Episode, active_terms, weighted
from hrkd_ds.errors import UserError
from hrkd_ds.distill.terms import token_mask


@dataclass
class DistillLossOutput(ModelOutput):
    """Scalar to backpropagate plus detached per-domain terms for logging.

    A ModelOutput (a dict underneath) so ZeRO-3's hooks see the tensors it returns.
    """

    total: torch.Tensor | None = None  # ()
    terms: dict[str, torch.Tensor] | None = None  # emb (K,), att (L,K), hid (L,K), pred (K,)
    weights: torch.Tensor | None = None  # (L+1, K) domain weights, rows sum to 1
    ratios: torch.Tensor | None = None  # (L, K, L+1) compare-aggregate alphas (zeros if off)


class RelationalParams(nn.Module):
    """The learned parts of the loss: projections W_0..W_L (student -> teacher width), W_p when a
    term reads the pooled states (`pooled`; absent otherwise, so earlier checkpoints still load),
    and graph."""

    def __init__(self, student_hidden: int, teacher_hidden: int, student_layers: int, num_domains: int, graph_cfg,
                 pooled: bool = False):
        super().__init__()
        self.num_domains = num_domains
        self.projections = nn.ModuleList(nn.Linear(student_hidden, teacher_hidden) for _ in range(student_layers + 1))
        self.pool_projection = nn.Linear(student_hidden, teacher_hidden) if pooled else None
        for proj in [*self.projections, *([self.pool_projection] if pooled else [])]:  # BERT-style init, as TinyBERT's fit_dense
            nn.init.normal_(proj.weight, std=0.02)
            nn.init.zeros_(proj.bias)
        self.graph = DomainGraph(num_domains, student_layers + 1, teacher_hidden, graph_cfg) if graph_cfg.enabled else None
        self.detach_prototypes = graph_cfg.detach_prototypes
        self.mask_padding = graph_cfg.mask_padding
        # uniform weights (no graph) have nothing to train: the plain sum
        self.objective = graph_cfg.objective if self.graph is not None and graph_cfg.trainable else "loss"
        self.robust_temperature = graph_cfg.robust_temperature


class _RelationalLossBase(nn.Module):
    """Shared constructor: layer map, temperature, the active terms, and the (possibly shared)
    learned parameters."""

    def __init__(
        self,
        student_hidden: int,
        teacher_hidden: int,
        student_layers: int,
        teacher_layers: int,
        num_domains: int,
        graph_cfg,
        layer_map: list[int] | None = None,
        temperature: float = 1.0,
        params: RelationalParams | None = None,
        terms: dict | None = None,
        prediction: bool = True,
        normalization: str = "masked",
        two_stage: bool = False,
        compiled_terms: bool = False,
        skip_cls: bool = False,
    ):
        super().__init__()
        self.layer_map = resolve_layer_map(student_layers, teacher_layers, layer_map)
        self.temperature = temperature
        # (term, weight) in summation order; `terms` overrides the registered defaults (distill.terms),
        # prediction=False drops the terms that read the task head (general distillation has none)
        self.terms = active_terms(terms or {}, task_head=prediction)
        self.reads = frozenset().union(*(t.reads for t, _ in self.terms))  # every phase's: what the encoders compute
        self.phases: list[list] = [self.terms]  # two_stage: [the layer-wise terms, the per-domain terms]
        if two_stage:
            self.phases = [[(t, w) for t, w in self.terms if t.level != "domain"],
                           [(t, w) for t, w in self.terms if t.level == "domain"]]
            if not all(self.phases):
                raise UserError("distill.method=two-stage needs a layer-wise term (emb, att, hid) and a per-domain "
                                "one (pred, ce, kl) with a non-zero weight in distill.terms")
        self.num_domains = num_domains
        self.normalization = normalization  # MSE denominators, hrkd_ds/distill/normalization.py
        self.compiled_terms = compiled_terms  # distill.compiled_terms: the big MSE sums through torch.compile
        self.skip_cls = skip_cls  # the embedding/hidden MSEs leave out position 0 (distill.general_skip_cls)
        self.teacher_depth = teacher_layers  # the pooled term reads the teacher's last layer
        self.params = params or RelationalParams(student_hidden, teacher_hidden, student_layers, num_domains, graph_cfg,
                                                 pooled="pooled" in self.reads)
        if "pooled" in self.reads and self.params.pool_projection is None:
            raise ValueError("the pooled term needs RelationalParams(pooled=True)")

    def use_phase(self, index: int) -> None:
        """Two-stage: train phase `index`'s terms from now on (the encoders still compute every
        phase's internals, so the switch needs no new forward hooks)."""
        self.terms = self.phases[index]

    @property
    def attention_loss(self) -> bool:
        """Some term reads attention maps (else neither encoder computes them)."""
        return "attentions" in self.reads

    @property
    def layer_terms(self) -> bool:
        """Some term enters the graph-weighted sum (else the graph has nothing to weight)."""
        return any(t.level != "domain" for t, _ in self.terms)

    @classmethod
    def from_config(cls, student, teacher, num_domains: int, graph_cfg, distill_cfg, params: RelationalParams | None = None,
                    prediction: bool = True, two_stage: bool = False):
        """Build from two MultiDomainClassifiers and the graph/distill config sections."""
        return cls(
            student.hidden_size, teacher.hidden_size, student.num_layers, teacher.num_layers, num_domains,
            graph_cfg, distill_cfg.layer_map or None, distill_cfg.temperature, params, distill_cfg.terms,
            prediction, distill_cfg.normalization, two_stage, compiled_terms=distill_cfg.compiled_terms,
            skip_cls=distill_cfg.general_skip_cls and not prediction,  # the task-agnostic stage only
        )

    def request_internals(self, student, teacher) -> None:
        """Make both encoders compute only what this loss reads: the student every layer's hidden
        state (and map, with the attention term on), the teacher only the mapped layers' (none
        when no term reads hidden states) and, for the pooled term, its last layer.

        The release's switches read padding (MSEs over every element, padding in the prototypes):
        then both encoders run padded, since a padding-free forward leaves zeros there."""
        if self.normalization == "reference" or not self.params.mask_padding:
            student.padding_free = teacher.padding_free = False
        student_layers = range(1, len(self.layer_map) + 1)
        student.select_internals(student_layers, student_layers if self.attention_loss else ())
        # a logit-only loss (logit-kd) reads no teacher state: its layers then keep none
        teacher_layers = [*(self.layer_map if "hidden" in self.reads else ()),
                          *((self.teacher_depth,) if "pooled" in self.reads else ())]
        teacher.select_internals(teacher_layers, self.layer_map if self.attention_loss else ())

    def _check(self, student_out, teacher_out, attention_mask, num_domains):
        K = num_domains or self.num_domains
        if K != self.num_domains:
            raise ValueError(f"loss built for {self.num_domains} domains, called with {K}")
        if attention_mask.shape[0] % K:
            raise ValueError(f"batch {attention_mask.shape[0]} is not K={K} domain-major blocks")
        if len(student_out.hidden_states) != len(self.params.projections) - 1:
            raise ValueError("student depth does not match the loss's projections")
        return K

    def _teacher_layers(self, teacher_out, dtype: torch.dtype):
        """Teacher (embeddings + mapped hidden, mapped attention, logits) in the student's dtype.

        A bf16 teacher's outputs are upcast here, so the loss is computed at the student's precision.
        """
        reads_hidden = "hidden" in self.reads  # else (a logit-only loss) the teacher may have no internals at all
        t_hid = [teacher_out.embeddings, *(teacher_out.hidden_states[j - 1] for j in self.layer_map)] if reads_hidden else []
        t_att = [teacher_out.attentions[j - 1] for j in self.layer_map] if self.attention_loss else []
        return [t.to(dtype) for t in t_hid], [t.to(dtype) for t in t_att], teacher_out.logits.to(dtype)

    def _pooled(self, student_out, teacher_out, dtype: torch.dtype):
        """(teacher, student) last-layer states at position 0, (N, Ht) and (N, Hs); None when no
        term reads them. Position 0 is a real token in every row (padding is on the right). A
        cached teacher brings its pooled states (`pooled`, distill/teacher_targets.py)."""
        if "pooled" not in self.reads:
            return None, None
        teacher = teacher_out.pooled if teacher_out.pooled is not None else teacher_out.hidden_states[self.teacher_depth - 1][:, 0]
        return teacher.to(dtype), student_out.hidden_states[-1][:, 0]

    @staticmethod
    def _place(level: str, value: torch.Tensor, levels: int) -> torch.Tensor:
        """A layer-wise term's rows in the (L+1, K) level layout, zeros elsewhere (adding a zero is exact)."""
        if level == "embedding":
            return torch.cat([value, value.new_zeros(levels - 1, value.shape[-1])])
        return torch.cat([value.new_zeros(1, value.shape[-1]), value])

    @staticmethod
    def _logged(level: str, value: torch.Tensor) -> torch.Tensor:
        """The term as it is logged: (K,) for the embedding level, else as computed."""
        return value[0] if level == "embedding" else value


class RelationalDistillLoss(_RelationalLossBase):
    """Fused HRKD loss: no Python loop over domains; layers looped only where tensors are separate."""

    def forward(self, student_out, teacher_out, attention_mask: torch.Tensor, num_domains: int | None = None, labels=None) -> DistillLossOutput:
        """Total loss and per-domain terms for one domain-major episode (K*B rows)."""
        K = self._check(student_out, teacher_out, attention_mask, num_domains)
        p = self.params
        dtype = student_out.embeddings.dtype
        t_hid, t_att, t_logits = self._teacher_layers(teacher_out, dtype)
        s_hid = [student_out.embeddings, *student_out.hidden_states]  # L+1 x (N, T, Hs)
        masks = loss_masks(attention_mask, dtype, K, self.normalization)  # what the MSEs count and divide by
        reading_hidden = any("hidden" in t.reads for t, _ in self.terms)  # this phase's terms
        projected = [proj(h) for proj, h in zip(p.projections, s_hid)] if reading_hidden else None  # L+1 x (N, T, Ht)
        t_pool, s_pool = self._pooled(student_out, teacher_out, dtype)
        reading_pooled = any("pooled" in t.reads for t, _ in self.terms)
        ep = Episode(K, student_out, t_hid, t_att, t_logits, projected, masks,
                     without_first_token(masks, K) if self.skip_cls else masks, labels, self.temperature, self.compiled_terms,
                     t_pool, p.pool_projection(s_pool) if reading_pooled else None)

        logs: dict[str, torch.Tensor] = {}
        layer_terms, per_domain = None, []  # (L+1, K) sum_t w_t L_t,g,d; each t' as w_t' (1/K) sum_d L_t',d
        for term, w in self.terms:
            value = term.fused(ep)
            logs[term.name] = self._logged(term.level, value)
            if term.level == "domain":
                per_domain.append(weighted(value.sum() / K, w))
            else:
                part = weighted(self._place(term.level, value, len(s_hid)), w)
                layer_terms = part if layer_terms is None else layer_terms + part

        weights, ratios = self._domain_weights(s_hid, token_mask(attention_mask, dtype), K)  # (L+1, K), (L, K, L+1)
        total = weighted_layer_sum(weights, layer_terms, p.objective, p.robust_temperature, p.graph) if layer_terms is not None \
            else s_hid[0].new_zeros(())
        for part in per_domain:
            total = total + part
        terms = {**logs, "weights": weights, "ratios": ratios}
        alignment = getattr(p.graph, "alignment", None)
        if alignment is not None:  # graph.objective=meta: the last measured A the weights follow (graph_meta.py)
            terms["alignment"] = alignment.float()
        terms = {k: v.detach() for k, v in terms.items()}
        return DistillLossOutput(total=total, terms=terms, weights=terms["weights"], ratios=terms["ratios"])

    def prototypes(self, s_hid: list[torch.Tensor], tokens: torch.Tensor, K: int) -> torch.Tensor:
        """Domain prototypes F (L+1, K, Ht): mean of W_l H_S^l over the batch and tokens."""
        p = self.params
        # mean(W h + b) = W mean(h) + b: average the narrow student states, then project
        if p.mask_padding:
            count = tokens.reshape(K, -1).sum(1).clamp_min(1)[:, None]  # (K, 1)
            weights = tokens.reshape(K, 1, -1)  # (K, 1, B*T)
            means = [torch.bmm(weights, h.reshape(K, -1, h.shape[-1])).squeeze(1) / count for h in s_hid]  # (K, Hs)
        else:
            means = [h.reshape(K, -1, h.shape[-1]).mean(1) for h in s_hid]
        return torch.stack([proj(m) for proj, m in zip(p.projections, means)])  # (L+1, K, Ht)

    def _domain_weights(self, s_hid: list[torch.Tensor], tokens: torch.Tensor, K: int):
        """Prototypes -> graph weights (L+1, K), ratios (L, K, L+1); uniform 1/K when the graph is
        off or no term is graph-weighted."""
        p = self.params
        G = len(s_hid)
        if p.graph is None or not self.layer_terms:
            return s_hid[0].new_full((G, K), 1.0 / K), s_hid[0].new_zeros(G - 1, K, G)
        protos = self.prototypes(s_hid, tokens, K)
        if p.detach_prototypes:
            protos = protos.detach()
        return p.graph(protos)
