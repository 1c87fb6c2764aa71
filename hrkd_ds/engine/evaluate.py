"""Per-domain accuracy, sharded over ranks with the same number of forwards on every rank.

Under ZeRO-3 each forward gathers parameters collectively, so a rank that ran out of examples
still runs (and ignores) a padding batch instead of leaving the others waiting.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from hrkd_ds.engine.distributed import all_reduce_sum

Predict = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def pad_batch(rows: list[dict], pad_id: int, domain_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad a list of tokenized rows into model inputs for one domain."""
    width = max(len(r["input_ids"]) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long)
    for i, r in enumerate(rows):
        t = len(r["input_ids"])
        ids[i, :t] = torch.as_tensor(r["input_ids"])
        mask[i, :t] = 1
        if "token_type_ids" in r:
            types[i, :t] = torch.as_tensor(r["token_type_ids"])
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "token_type_ids": types.to(device),
        "domain_ids": torch.full((n,), domain_id, dtype=torch.long, device=device),
        "labels": torch.as_tensor([r["label"] for r in rows], dtype=torch.long, device=device),
    }


@torch.no_grad()
def domain_accuracy(predict: Predict, dataset, domain_id: int, pad_id: int, rank: int, world: int,
                    batch_size: int, device: torch.device) -> float:
    """Accuracy of one domain's split, every rank taking a strided shard."""
    n = len(dataset)
    per_rank = math.ceil(n / world)
    mine = list(range(rank, n, world))
    correct = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, max(per_rank, 1), batch_size):
        idx = mine[start:start + batch_size]
        real = len(idx)
        rows = [dataset[i] for i in (idx or [0])]  # a rank out of examples still joins the forward
        batch = pad_batch(rows, pad_id, domain_id, device)
        pred = predict(batch).argmax(dim=-1)
        if real:
            correct[0] += (pred[:real] == batch["labels"][:real]).sum().double()
            correct[1] += real
    all_reduce_sum(correct)
    return float(correct[0] / correct[1].clamp(min=1))


def evaluate(predict: Predict, splits: dict[str, object], domains: list[str], pad_id: int, rank: int,
             world: int, batch_size: int, device: torch.device) -> dict[str, float]:
    """{domain: accuracy, ..., "average": mean over domains} (the paper's average)."""
    acc = {d: domain_accuracy(predict, splits[d], k, pad_id, rank, world, batch_size, device) for k, d in enumerate(domains)}
    acc["average"] = sum(acc.values()) / len(domains)
    return acc
