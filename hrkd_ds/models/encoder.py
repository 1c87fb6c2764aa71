"""Multi-domain classifier: one HF `*ForSequenceClassification` with K*C domain-major outputs.

Why one flat head instead of K heads: the exported model is then a plain Hugging Face model that
`AutoModelForSequenceClassification.from_pretrained` loads with no custom code; domain d owns
logits [d*C, (d+1)*C) and `config.id2label` names them "domain:label" (the custom config
attributes `hrkd_domains` / `hrkd_labels` say how to slice). models/build.py builds one (random,
pretrained, or from the teacher's layers).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from transformers.utils import ModelOutput

from hrkd_ds.errors import UserError
from hrkd_ds.models.attention import ATTENTION_KINDS, register_attention
from hrkd_ds.models.dropout import use_fast_dropout
from hrkd_ds.models.packing import PackedLayout


@dataclass
class EncoderOutputs(ModelOutput):
    """What distillation needs from one encoder forward pass.

    A ModelOutput (a dict underneath) so ZeRO-3's forward/backward hooks can find the tensors.
    """

    logits: torch.Tensor | None = None  # (N, C) each example's own-domain slice
    all_logits: torch.Tensor | None = None  # (N, K*C)
    embeddings: torch.Tensor | None = None  # (N, T, H) embedding-layer output
    hidden_states: tuple[torch.Tensor | None, ...] | None = None  # L x (N, T, H), layer outputs; None where not selected
    attentions: tuple[torch.Tensor | None, ...] | None = None  # L x (N, heads, T, T), scores or probs; None where not selected
    pooled: torch.Tensor | None = None  # (N, H) last layer at position 0: only a cached teacher's (distill/step.py)


def _layer_indices(layers: Iterable[int] | None, count: int) -> frozenset[int]:
    """1-based layer numbers (None: all) -> 0-based indices, checked against the depth."""
    if layers is None:
        return frozenset(range(count))
    bad = [j for j in layers if not 1 <= j <= count]
    if bad:
        raise ValueError(f"layers {bad} outside 1..{count}")
    return frozenset(j - 1 for j in layers)


def _output_tensor(output):
    """A layer's hidden-state output (transformers 4 layers return a tuple, 5 a tensor)."""
    return output[0] if isinstance(output, tuple) else output


def label_names(domains: list[str], labels: list[str]) -> dict[int, str]:
    """Domain-major "domain:label" names for the K*C flat outputs."""
    return {d * len(labels) + c: f"{dom}:{lab}" for d, dom in enumerate(domains) for c, lab in enumerate(labels)}


def annotate_config(config, domains: list[str], labels: list[str]) -> None:
    """Write the K*C label layout into an HF config so an exported model explains itself."""
    id2label = label_names(domains, labels)
    config.num_labels = len(id2label)
    config.id2label = id2label
    config.label2id = {v: k for k, v in id2label.items()}
    config.hrkd_domains = list(domains)
    config.hrkd_labels = list(labels)


class MultiDomainClassifier(nn.Module):
    """Wraps an HF sequence classifier; returns own-domain logits and the distillation internals."""

    def __init__(self, hf_model: nn.Module, attention: str = "scores"):
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise UserError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        cfg = hf_model.config
        domains, labels = getattr(cfg, "hrkd_domains", None), getattr(cfg, "hrkd_labels", None)
        if not domains or not labels or len(domains) * len(labels) != cfg.num_labels:
            raise UserError("model config lacks a consistent hrkd_domains/hrkd_labels layout (use build_model)")
        impl = register_attention()
        if cfg._attn_implementation != impl:
            hf_model.set_attn_implementation(impl)
        use_fast_dropout(hf_model)  # the same masks' distribution, 4x cheaper on CPU (models/dropout.py)
        self.hf_model = hf_model
        self.attention = attention
        self.num_domains = len(domains)
        self.num_labels = len(labels)
        # Padded rows run packed (hrkd_ds/models/packing.py); a loss that reads padding switches it off.
        self.padding_free = _bert_layout(hf_model)
        self.select_internals()

    def select_internals(self, hidden_layers: Iterable[int] | None = None, map_layers: Iterable[int] | None = None) -> None:
        """Which 1-based layers' hidden states and attention maps `output_internals` returns (None: all).

        A distillation loss reads a few teacher layers: the others then keep no hidden state and
        compute no attention map (fused SDPA instead of eager attention), which is most of the
        teacher forward's activation memory.
        """
        self.hidden_layers = _layer_indices(hidden_layers, self.num_layers)
        self.map_layers = _layer_indices(map_layers, self.num_layers)

    @property
    def config(self):
        """The wrapped model's HF config."""
        return self.hf_model.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Export as a plain HF model (AutoModelForSequenceClassification loads it)."""
        self.hf_model.save_pretrained(save_directory, **kwargs)

    def _domain_ids(self, domain_ids: torch.Tensor | None, n: int, device) -> torch.Tensor:
        """Explicit ids, or domain-major equal blocks (the episode layout) when omitted."""
        if domain_ids is not None:
            return domain_ids.to(device=device, dtype=torch.long)
        if n % self.num_domains:
            raise ValueError(f"domain_ids omitted but batch {n} is not K={self.num_domains} equal domain-major blocks")
        return torch.arange(self.num_domains, device=device).repeat_interleave(n // self.num_domains)

    def forward(
        self,
        input_ids: torch.Tensor,  # (N, T)
        attention_mask: torch.Tensor,  # (N, T) 1 = token, 0 = padding
        token_type_ids: torch.Tensor | None = None,
        domain_ids: torch.Tensor | None = None,  # (N,)
        output_internals: bool = False,
    ) -> EncoderOutputs:
        """Classify; with output_internals also return embeddings and the selected hidden states and maps."""
        maps: dict[int, torch.Tensor | None] | None = dict.fromkeys(self.map_layers) if output_internals else None
        hidden: dict[int, torch.Tensor] = {}
        layout = PackedLayout.from_mask(attention_mask) if self.padding_free else None
        with self._recording(hidden, output_internals):
            if layout is None:
                all_logits = self.hf_model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                    hrkd_attention=self.attention,
                    hrkd_maps=maps,
                    return_dict=True,
                ).logits  # (N, K*C)
            else:
                all_logits = self._packed_logits(layout, input_ids, token_type_ids, maps)
        n = all_logits.shape[0]
        ids = self._domain_ids(domain_ids, n, all_logits.device)
        per_domain = all_logits.view(n, self.num_domains, self.num_labels)  # (N, K, C)
        logits = per_domain.gather(1, ids.view(n, 1, 1).expand(n, 1, self.num_labels)).squeeze(1)  # (N, C)
        if not output_internals:
            return EncoderOutputs(logits=logits, all_logits=all_logits)
        if layout is not None:
            hidden = {i: layout.unpack(h) for i, h in hidden.items()}
        return EncoderOutputs(
            logits=logits,
            all_logits=all_logits,
            embeddings=hidden[-1],
            hidden_states=tuple(hidden.get(i) for i in range(self.num_layers)),
            attentions=tuple(maps.get(i) for i in range(self.num_layers)),
        )

    def _packed_logits(self, layout: PackedLayout, input_ids, token_type_ids, maps) -> torch.Tensor:
        """BertForSequenceClassification's forward on the packed real tokens -> (N, K*C) logits.

        Runs the base model's parts itself (embeddings, encoder, pooler on each row's token 0):
        the base forward would build an (N, 1, T, T) mask the packed layout does not use.
        """
        hf, base = self.hf_model, self.hf_model.base_model
        types = layout.pack(token_type_ids) if token_type_ids is not None else torch.zeros_like(layout.index).unsqueeze(0)
        x = base.embeddings(input_ids=layout.pack(input_ids), token_type_ids=types,
                            position_ids=layout.positions(input_ids.device))
        x = base.encoder(x, attention_mask=None, hrkd_attention=self.attention, hrkd_maps=maps,
                         hrkd_packing=layout).last_hidden_state  # (1, total, H)
        pooled = base.pooler(x[0, layout.starts].unsqueeze(1))  # the pooler reads position 0 of (N, 1, H)
        return hf.classifier(hf.dropout(pooled))

    @contextmanager
    def _recording(self, store: dict[int, torch.Tensor], active: bool):
        """Forward hooks keeping the embedding output (key -1) and the selected layers' outputs.

        Registered per call, so they run after any hooks DeepSpeed registered at engine start
        (ZeRO-3 may replace a module's output with a tensor that carries its backward hook).
        """
        if not active:
            yield
            return
        base = self.hf_model.base_model  # BERT-family layout: embeddings, encoder.layer[i]
        handles = [base.embeddings.register_forward_hook(lambda m, a, o: store.__setitem__(-1, o))]
        for i in self.hidden_layers:
            handles.append(base.encoder.layer[i].register_forward_hook(
                lambda m, a, o, i=i: store.__setitem__(i, _output_tensor(o))))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _bert_layout(hf_model: nn.Module) -> bool:
    """The packed forward re-assembles BertForSequenceClassification; other layouts run padded."""
    base = getattr(hf_model, "base_model", None)
    return all(hasattr(base, a) for a in ("embeddings", "encoder", "pooler")) and base.pooler is not None \
        and all(hasattr(hf_model, a) for a in ("dropout", "classifier"))
