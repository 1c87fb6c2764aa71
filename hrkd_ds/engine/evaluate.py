"""Per-domain accuracy, sharded over ranks with the same number of forwards on every rank.

Under ZeRO-3 each forward gathers parameters collectively, so a rank that ran out of examples
still runs (and ignores) a padding batch instead of leaving the others waiting.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from hrkd_ds.data.collate import collate_episode
from hrkd_ds.engine.distributed import all_reduce_sum

Predict = Callable[[dict[str, torch.Tensor]], torch.Tensor]
EVAL_BATCH_SIZE = 32


def eval_batch(dataset, indices: list[int], pad_id: int, domain_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One domain's rows as model inputs: the episode collation with a single domain."""
    batch = collate_episode([dataset], [indices], pad_id)
    batch["domain_ids"].fill_(domain_id)
    return {k: v.to(device) for k, v in batch.items()}


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
        batch = eval_batch(dataset, idx or [0], pad_id, domain_id, device)  # a rank out of examples still joins the forward
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


def evaluate_dev_test(predict: Predict, dev_sets: dict[str, object], test_sets: dict[str, object], domains: list[str],
                      pad_id: int, rank: int, world: int, batch_size: int, device: torch.device):
    """(dev, test) per-domain accuracies: what every evaluation in a run reports."""
    args = (domains, pad_id, rank, world, batch_size, device)
    return evaluate(predict, dev_sets, *args), evaluate(predict, test_sets, *args)
