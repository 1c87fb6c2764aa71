"""One training step's forward, and the contract between the training loop and the module a
DeepSpeed engine wraps.

`module(batch, teacher=..., progress=...)` returns a `StepOutput` (`teacher`: the stage's frozen
teacher engine, or None; `progress`: the share of the stage's optimizer steps already done, which
a phased method such as two-stage reads); `module(batch, predict=True)` returns logits. Logged tensors describe their own layout
through the module's `log_layout`, so the generic loop (engine/loop.py) formats any method's logs
without knowing what they are. `distill_step` is the distilling modules' forward, top to bottom;
the loop then does the backward, the optimizer step, evaluation and checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from hrkd_ds.data.collate import TEACHER_PREFIX
from hrkd_ds.models.encoder import EncoderOutputs

from hrkd_ds.distill.graph_meta import refresh_alignment

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "domain_ids")

BY_DOMAIN = "by_domain"  # (K,) or (L, K): per-domain values, filed under the row's "terms"
RAW = "raw"  # any shape: nested lists at the row's top level (e.g. graph weights, ratios)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def teacher_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The teacher's own encoding of the rows when it has its own tokenizer (teacher.tokenizer:
    `teacher_*` keys, data/collate.py), else the student's; domain_ids are the same rows'."""
    if TEACHER_PREFIX + "input_ids" not in batch:
        return model_inputs(batch)
    return {k: batch[TEACHER_PREFIX + k] if k != "domain_ids" else batch[k] for k in MODEL_INPUTS}


@dataclass
class StepOutput(ModelOutput):
    """Scalar to backpropagate plus detached tensors for logging (a dict for ZeRO-3's hooks)."""

    loss: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] | None = None


def log_layout(module: torch.nn.Module, key: str) -> str:
    """How the loop should file log `key` of `module` (BY_DOMAIN unless the module says otherwise)."""
    return getattr(module, "log_layout", {}).get(key, BY_DOMAIN)


def cached_teacher_output(logits: torch.Tensor, pooled: torch.Tensor | None = None):
    """The teacher's output as a cached-target loss reads it: `logits` (and the pooled states) from
    the cache, no per-token internals (the loss gathers teacher states only when a term reads
    them, RelationalDistillLoss._teacher_layers and _pooled)."""
    return EncoderOutputs(logits=logits, embeddings=None, hidden_states=(), attentions=(), pooled=pooled)


def distill_step(student, teacher, loss, batch: dict[str, torch.Tensor], num_domains: int) -> StepOutput:
    """Teacher forward, student forward, the registered loss terms, the log record."""
    inputs = model_inputs(batch)
    # 1. the frozen teacher: no graph kept; a ZeRO-3 teacher gathers its layers here, a collective,
    #    so every rank runs it every step. It returns only the internals the loss asked for
    #    (RelationalDistillLoss.request_internals). With cached targets (a recipe without
    #    layer-wise terms, distill/teacher_targets.py) there is no teacher: its logits (and pooled
    #    states) come with the batch
    if teacher is None:
        teacher_out = cached_teacher_output(batch["teacher_logits"], batch.get("teacher_pooled"))
    else:
        with torch.no_grad():
            teacher_out = teacher(**teacher_inputs(batch), output_internals=True)
    # 2. the student, with its embeddings, hidden states and (when a term reads them) attention maps
    student_out = student(**inputs, output_internals=True)
    # 2b. graph.objective=meta only (issue 29, helper D): re-measure the graph's held-out gradient
    #     alignment when due (distill/graph_meta.py); a no-op for every other objective
    refresh_alignment(student, loss, teacher_out, batch, num_domains)
    # 3. every active term (distill.terms), graph-weighted where it is layer-wise (docs/METHOD.md, "Total loss")
    result = loss(student_out, teacher_out, batch["attention_mask"], num_domains, labels=batch.get("labels"))
    # 4. the log record: each term per domain (and layer), the domain weights and ratios, detached
    return StepOutput(loss=result.total, logs=result.terms)
