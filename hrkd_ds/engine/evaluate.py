"""Per-domain accuracy, sharded over ranks with the same number of forwards on every rank.

Under ZeRO-3 each forward gathers parameters collectively, so a rank that ran out of examples
still runs (and ignores) a padding batch instead of leaving the others waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
def _run_shard(predict: Predict, dataset, domain_id: int, pad_id: int, rank: int, world: int,
               batch_size: int, device: torch.device) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(positions, predictions, labels) of this rank's strided shard of one domain's split."""
    n = len(dataset)
    per_rank = math.ceil(n / world)
    mine = list(range(rank, n, world))
    preds, labels = [], []
    for start in range(0, max(per_rank, 1), batch_size):
        idx = mine[start:start + batch_size]
        real = len(idx)
        batch = eval_batch(dataset, idx or [0], pad_id, domain_id, device)  # a rank out of examples still joins the forward
        pred = predict(batch).argmax(dim=-1)
        preds.append(pred[:real])
        labels.append(batch["labels"][:real])
    return mine, torch.cat(preds), torch.cat(labels)


def domain_predictions(predict: Predict, dataset, domain_id: int, pad_id: int, rank: int, world: int,
                       batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example's (prediction, label) in split order on every rank: one all-reduce, each
    position filled by exactly one rank. Paired comparisons between runs need the examples."""
    mine, pred, label = _run_shard(predict, dataset, domain_id, pad_id, rank, world, batch_size, device)
    table = torch.zeros(2, len(dataset), dtype=torch.long, device=device)
    at = torch.tensor(mine, dtype=torch.long, device=device)
    table[0, at], table[1, at] = pred.long() + 1, label.long() + 1
    all_reduce_sum(table)
    return table[0] - 1, table[1] - 1


@dataclass
class SplitEval:
    """Accuracy per domain (+ "average", the mean over domains: the paper's figure) and every
    example's prediction and label per domain."""

    accuracy: dict[str, float]
    predictions: dict[str, dict[str, list[int]]]


def evaluate(predict: Predict, splits: dict[str, object], domains: list[str], pad_id: int, rank: int,
             world: int, batch_size: int, device: torch.device) -> SplitEval:
    acc, preds = {}, {}
    for k, d in enumerate(domains):
        pred, label = domain_predictions(predict, splits[d], k, pad_id, rank, world, batch_size, device)
        acc[d] = float((pred == label).double().mean()) if len(label) else 0.0
        preds[d] = {"pred": pred.tolist(), "label": label.tolist()}
    acc["average"] = sum(acc.values()) / len(domains)
    return SplitEval(acc, preds)


def evaluate_dev_test(predict: Predict, dev_sets: dict[str, object], test_sets: dict[str, object], domains: list[str],
                      pad_id: int, rank: int, world: int, batch_size: int, device: torch.device) -> tuple[SplitEval, SplitEval]:
    """(dev, test) evaluations: what every evaluation in a run reports."""
    args = (domains, pad_id, rank, world, batch_size, device)
    return evaluate(predict, dev_sets, *args), evaluate(predict, test_sets, *args)
