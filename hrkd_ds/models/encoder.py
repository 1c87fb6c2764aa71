"""Multi-domain classifier: one HF `*ForSequenceClassification` with K*C domain-major outputs.

Why one flat head instead of K heads: the exported model is then a plain Hugging Face model that
`AutoModelForSequenceClassification.from_pretrained` loads with no custom code; domain d owns
logits [d*C, (d+1)*C) and `config.id2label` names them "domain:label" (the custom config
attributes `hrkd_domains` / `hrkd_labels` say how to slice).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig
from transformers.utils import ModelOutput

from hrkd_ds.errors import UserError
from hrkd_ds.models.attention import ATTENTION_KINDS, register_attention
from hrkd_ds.models.checks import check_fit, check_model_dir
from hrkd_ds.models.student_init import check_teacher_layers_fit, copy_teacher_layers, teacher_widths


@dataclass
class EncoderOutputs(ModelOutput):
    """What distillation needs from one encoder forward pass.

    A ModelOutput (a dict underneath) so ZeRO-3's forward/backward hooks can find the tensors.
    """

    logits: torch.Tensor | None = None  # (N, C) each example's own-domain slice
    all_logits: torch.Tensor | None = None  # (N, K*C)
    embeddings: torch.Tensor | None = None  # (N, T, H) embedding-layer output
    hidden_states: tuple[torch.Tensor, ...] | None = None  # L x (N, T, H), layer outputs
    attentions: tuple[torch.Tensor, ...] | None = None  # L x (N, heads, T, T), scores or probs


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
        self.hf_model = hf_model
        self.attention = attention
        self.num_domains = len(domains)
        self.num_labels = len(labels)

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
        """Classify; with output_internals also return embeddings, hidden states and attention maps."""
        out = self.hf_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_internals,
            output_attentions=output_internals,
            hrkd_attention=self.attention,
            return_dict=True,
        )
        all_logits = out.logits  # (N, K*C)
        n = all_logits.shape[0]
        ids = self._domain_ids(domain_ids, n, all_logits.device)
        per_domain = all_logits.view(n, self.num_domains, self.num_labels)  # (N, K, C)
        logits = per_domain.gather(1, ids.view(n, 1, 1).expand(n, 1, self.num_labels)).squeeze(1)  # (N, C)
        if not output_internals:
            return EncoderOutputs(logits=logits, all_logits=all_logits)
        hidden = tuple(out.hidden_states)  # L+1 entries: embedding output first
        return EncoderOutputs(
            logits=logits,
            all_logits=all_logits,
            embeddings=hidden[0],
            hidden_states=hidden[1:],
            attentions=tuple(out.attentions),
        )


def _names(names: list[str] | None, count: int, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i}" for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{len(names)} {prefix} names given for {count} {prefix}s")
    return list(names)


def build_model(
    model_cfg,
    num_domains: int,
    num_labels: int,
    vocab_size: int,
    pad_id: int,
    max_seq_len: int,
    attention: str = "scores",
    teacher: MultiDomainClassifier | None = None,
    *,
    domains: list[str] | None = None,
    labels: list[str] | None = None,
) -> MultiDomainClassifier:
    """Build a K*C-output encoder: pretrained weights, teacher layers, or random init from sizes.

    - `model_cfg.init == "teacher_layers"`: teacher width, the listed teacher layers copied.
    - otherwise `model_cfg.pretrained` set: HF weights from that local dir, fresh classifier.
    - otherwise: random BERT from `model_cfg` sizes, `vocab_size`, positions = `max_seq_len`.
    """
    impl = register_attention()
    domains = _names(domains, num_domains, "domain")
    labels = _names(labels, num_labels, "label")
    dropout = {"hidden_dropout_prob": model_cfg.dropout, "attention_probs_dropout_prob": model_cfg.dropout}
    if model_cfg.init == "teacher_layers":
        if teacher is None:
            raise UserError("student.init=teacher_layers needs the teacher model")
        t_cfg = teacher.config
        check_teacher_layers_fit(model_cfg, t_cfg.num_hidden_layers, teacher_widths(t_cfg))
        check_fit(t_cfg, vocab_size, pad_id, max_seq_len, "student.init=teacher_layers")
        hf_config = copy.deepcopy(t_cfg)
        hf_config.update({**dropout, "num_hidden_layers": len(model_cfg.teacher_layers)})
        annotate_config(hf_config, domains, labels)
        hf = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation=impl)
        copy_teacher_layers(hf, teacher.hf_model, model_cfg.teacher_layers)
    elif model_cfg.pretrained:
        check_model_dir(model_cfg.pretrained, "teacher/student.pretrained")  # train.py names the exact field earlier
        hf_config = AutoConfig.from_pretrained(model_cfg.pretrained, **dropout)
        check_fit(hf_config, vocab_size, pad_id, max_seq_len, f"pretrained model {model_cfg.pretrained}")
        annotate_config(hf_config, domains, labels)
        hf = AutoModelForSequenceClassification.from_pretrained(
            model_cfg.pretrained, config=hf_config, attn_implementation=impl, ignore_mismatched_sizes=True, use_safetensors=True
        )
    else:
        hf_config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=model_cfg.hidden_size,
            num_hidden_layers=model_cfg.num_layers,
            num_attention_heads=model_cfg.num_heads,
            intermediate_size=model_cfg.intermediate_size,
            max_position_embeddings=max_seq_len,
            type_vocab_size=2,
            pad_token_id=pad_id,
            **dropout,
        )
        annotate_config(hf_config, domains, labels)
        hf = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation=impl)
    return MultiDomainClassifier(hf, attention=attention)
