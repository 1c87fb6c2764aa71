"""Evaluation sharding: every rank runs the same number of forwards (ZeRO-3 gathers are
collective) and only real rows count."""

import datasets
import torch

from hrkd_ds.engine.evaluate import domain_accuracy


def _split(n: int) -> datasets.Dataset:
    rows = [{"input_ids": [2, 5 + i % 7, 3][: 1 + i % 3], "attention_mask": [1] * (1 + i % 3),
             "token_type_ids": [0] * (1 + i % 3), "label": i % 2} for i in range(n)]
    return datasets.Dataset.from_list(rows)


def test_equal_forward_counts_on_every_rank():
    for n in (1, 7, 38):
        ds = _split(n)
        for world in (1, 2, 3, 4):
            calls = []
            for rank in range(world):
                count = 0

                def predict(batch, rank=rank):
                    nonlocal count
                    count += 1
                    assert set(batch["domain_ids"].tolist()) == {2}
                    return torch.nn.functional.one_hot(batch["labels"], 2).float()  # always right

                acc = domain_accuracy(predict, ds, 2, 0, rank, world, 4, torch.device("cpu"))
                assert acc == (1.0 if rank < n else 0.0)  # local share; ranks sum counts in all_reduce
                calls.append(count)
            assert len(set(calls)) == 1, (n, world, calls)  # no rank waits for another


def test_accuracy_counts_only_real_rows():
    ds = _split(5)
    wrong = lambda batch: torch.nn.functional.one_hot(1 - batch["labels"], 2).float()  # noqa: E731
    assert domain_accuracy(wrong, ds, 0, 0, 0, 1, 2, torch.device("cpu")) == 0.0
    # rank 4 of 8 has no row of a 3-row split: it still runs its (ignored) forward
    calls = []
    domain_accuracy(lambda b: calls.append(1) or wrong(b), _split(3), 0, 0, 4, 8, 2, torch.device("cpu"))
    assert calls == [1]
