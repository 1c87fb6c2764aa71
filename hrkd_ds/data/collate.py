"""Episode batches (evaluation uses them with one domain): domain-major (K*B, T) tensors padded to the episode's longest row.

One T for all K domains lets the model run the whole episode as one batch and lets the fused
loss stack domains without re-padding. `pad_to="max_length"` pads every row to max_seq_len
instead, as the reference release does: with padding averaged into the prototypes
(graph.mask_padding=false) the domain weights depend on the padded length (docs/METHOD.md).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from hrkd_ds.config.schema import PAD_TO

_PADDED = (("input_ids", None), ("attention_mask", 0), ("token_type_ids", 0))  # None -> pad_id
TEACHER_PREFIX = "teacher_"  # the teacher's own encoding's keys in a batch (teacher.tokenizer)


def pad_rows(rows: dict[str, list], pad_id: int, length: int | None = None) -> dict[str, torch.Tensor]:
    """Token rows -> right-padded (N, T) input_ids / attention_mask / token_type_ids (T = longest or `length`)."""
    out = {
        key: pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows[key]], batch_first=True,
                          padding_value=pad_id if value is None else value)
        for key, value in _PADDED
    }  # fmt: skip
    if length is not None:
        T = out["input_ids"].shape[1]
        if T > length:
            raise ValueError(f"row of {T} tokens is longer than max_seq_len={length}")
        out = {key: F.pad(out[key], (0, length - T), value=pad_id if value is None else value) for key, value in _PADDED}
    return out


def _gather(dataset, indices: Sequence[int]) -> dict[str, list]:
    return dataset.select_columns(["input_ids", "attention_mask", "token_type_ids", "label"])[list(indices)]


def collate_episode(per_domain_datasets: Sequence, episode: Sequence[Sequence[int]], pad_id: int,
                    pad_to: Literal[PAD_TO] = "longest", max_seq_len: int | None = None,
                    targets: Sequence[np.ndarray] | None = None,
                    teacher: tuple[Sequence, int] | None = None,
                    pooled: Sequence[np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """episode[k] indexes per_domain_datasets[k]; rows are domain-major, domain_ids says whose.
    `targets[k]` (n_k, C), the cached teacher logits of domain k's rows (distill/teacher_targets.py),
    adds `teacher_logits` (K*B, C) float32, read from the memory map at the episode's rows, and
    `pooled[k]` (n_k, H_t) the teacher's cached pooled states, `teacher_pooled` (K*B, H_t).
    `teacher` (its per-domain datasets, its pad id): the teacher's own encoding of the same rows
    (data/teacher_encoding.py), added as `teacher_input_ids` / `_attention_mask` / `_token_type_ids`."""
    if pad_to == "max_length" and not max_seq_len:
        raise ValueError("pad_to='max_length' needs max_seq_len")
    parts = [_gather(ds, idx) for ds, idx in zip(per_domain_datasets, episode, strict=True)]
    rows = {key: [row for p in parts for row in p[key]] for key in ("input_ids", "attention_mask", "token_type_ids", "label")}
    length = max_seq_len if pad_to == "max_length" else None
    batch = pad_rows(rows, pad_id, length)
    batch["labels"] = torch.tensor(rows["label"], dtype=torch.long)
    batch["domain_ids"] = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([len(idx) for idx in episode]))
    if teacher is not None:
        t_parts = [_gather(ds, idx) for ds, idx in zip(teacher[0], episode, strict=True)]
        t_rows = {key: [row for p in t_parts for row in p[key]] for key, _ in _PADDED}
        batch.update({f"{TEACHER_PREFIX}{k}": v for k, v in pad_rows(t_rows, teacher[1], length).items()})
    for key, arrays in (("teacher_logits", targets), ("teacher_pooled", pooled)):
        if arrays is not None:
            batch[key] = _rows_at(arrays, episode)
    return batch


def _rows_at(per_domain: Sequence[np.ndarray], episode: Sequence[Sequence[int]]) -> torch.Tensor:
    """Domain-major float32 rows of per-domain (memory-mapped) arrays at the episode's indices."""
    rows = [np.asarray(a[np.asarray(idx, dtype=np.int64)], dtype=np.float32) for a, idx in zip(per_domain, episode, strict=True)]
    return torch.from_numpy(np.concatenate(rows))
