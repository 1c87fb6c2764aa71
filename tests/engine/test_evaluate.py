"""Evaluation sharding: every rank runs the same number of forwards (ZeRO-3 gathers are
collective), only real rows count, and the ranks' shards together cover every example once."""

import datasets
import torch

from hrkd_ds.engine.evaluate import domain_predictions, evaluate


def _split(n: int) -> datasets.Dataset:
    rows = [{"input_ids": [2, 5 + i % 7, 3][: 1 + i % 3], "attention_mask": [1] * (1 + i % 3),
             "token_type_ids": [0] * (1 + i % 3), "label": i % 2} for i in range(n)]
    return datasets.Dataset.from_list(rows)


def _right(batch):
    return torch.nn.functional.one_hot(batch["labels"], 2).float()


def test_equal_forward_counts_and_shards_cover_every_example():
    for n in (1, 7, 38):
        ds = _split(n)
        for world in (1, 2, 3, 4):
            calls, filled = [], torch.zeros(n, dtype=torch.long)
            for rank in range(world):
                count = 0

                def predict(batch):
                    nonlocal count
                    count += 1
                    assert set(batch["domain_ids"].tolist()) == {2}
                    return _right(batch)

                # without a process group the all-reduce is a no-op: each rank sees only its own rows
                pred, label = domain_predictions(predict, ds, 2, 0, rank, world, 4, torch.device("cpu"))
                mine = label >= 0
                assert torch.equal(pred[mine], label[mine]) and (pred[~mine] == -1).all()
                filled += mine.long()
                calls.append(count)
            assert len(set(calls)) == 1, (n, world, calls)  # no rank waits for another
            assert (filled == 1).all()  # every example predicted by exactly one rank


def test_accuracy_and_predictions_count_only_real_rows():
    wrong = lambda batch: torch.nn.functional.one_hot(1 - batch["labels"], 2).float()  # noqa: E731
    out = evaluate(wrong, {"x": _split(5), "y": _split(3)}, ["x", "y"], 0, 0, 1, 2, torch.device("cpu"))
    assert out.accuracy == {"x": 0.0, "y": 0.0, "average": 0.0}
    assert out.predictions["x"] == {"pred": [1, 0, 1, 0, 1], "label": [0, 1, 0, 1, 0]}
    right = evaluate(_right, {"x": _split(5)}, ["x"], 0, 0, 1, 2, torch.device("cpu"))
    assert right.accuracy["x"] == 1.0 and len(right.predictions["x"]["pred"]) == 5
    # rank 4 of 8 has no row of a 3-row split: it still runs its (ignored) forward
    calls = []
    pred, _ = domain_predictions(lambda b: calls.append(1) or wrong(b), _split(3), 0, 0, 4, 8, 2, torch.device("cpu"))
    assert calls == [1] and (pred == -1).all()
