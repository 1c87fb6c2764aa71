"""One distillation step's forward, top to bottom: what every distilling stage computes per episode.

The generic loop (engine/loop.py) calls the student's engine, whose module (methods.DistillModule)
runs this; the loop then does the backward, the optimizer step, evaluation and checkpoints.
"""

from __future__ import annotations

import torch

from hrkd_ds.engine.step import StepOutput, model_inputs


def distill_step(student, teacher, loss, batch: dict[str, torch.Tensor], num_domains: int) -> StepOutput:
    """Teacher forward, student forward, the registered loss terms, the log record."""
    inputs = model_inputs(batch)
    # 1. the frozen teacher: no graph kept; a ZeRO-3 teacher gathers its layers here, a collective,
    #    so every rank runs it every step. It returns only the internals the loss asked for
    #    (RelationalDistillLoss.request_internals)
    with torch.no_grad():
        teacher_out = teacher(**inputs, output_internals=True)
    # 2. the student, with its embeddings, hidden states and (when a term reads them) attention maps
    student_out = student(**inputs, output_internals=True)
    # 3. every active term (distill.terms), graph-weighted where it is layer-wise (docs/METHOD.md, "Total loss")
    result = loss(student_out, teacher_out, batch["attention_mask"], num_domains, labels=batch.get("labels"))
    # 4. the log record: each term per domain (and layer), the domain weights and ratios, detached
    return StepOutput(loss=result.total, logs=result.terms)
