"""Integration tests: the real trainer, started the ways users start it (1 process, 2 ranks).

Runs that several tests inspect are session fixtures, so each is trained once. All runs share one
tokenizer/tokenized-data cache. Helpers live in integration_helpers.py (imported by path).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_helpers import (  # noqa: E402
    RESUME_ARGS, assert_ok, deepspeed_cmd, free_port, run, single_cmd, torchrun_cmd, train_args,
)



@pytest.fixture(scope="session")
def it_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hrkd-cache")


@pytest.fixture(scope="session")
def it_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hrkd-runs")


@pytest.fixture(scope="session")
def zero2_run(it_root, it_cache):
    """deepspeed launcher, 2 ranks, ZeRO-2 meta-teacher/student, ZeRO-3 frozen teacher (default), hrkd."""
    out = it_root / "zero2"
    cmd = deepspeed_cmd(2, free_port()) + train_args(out, it_cache, *RESUME_ARGS, deepspeed="ds_configs/zero2.json")
    res = run(cmd, it_root / "zero2.log")
    assert_ok(res, "deepspeed launcher ZeRO-2 run")
    return out, res


@pytest.fixture(scope="session")
def zero3_run(it_root, it_cache):
    """torchrun, 2 ranks, ZeRO-3 student, ZeRO-3 teacher with parameter offload, method kd; teacher
    dropout 0 (reused by the 1-vs-2-rank test, which compares the teacher stage only)."""
    out = it_root / "zero3"
    cmd = torchrun_cmd(2, free_port()) + train_args(out, it_cache, "distill.method=kd", "teacher.dropout=0",
                                                    "distill.teacher_deepspeed=ds_configs/teacher_zero3_offload.json",
                                                    deepspeed="ds_configs/zero3.json")
    res = run(cmd, it_root / "zero3.log")
    assert_ok(res, "torchrun ZeRO-3 run")
    return out, res


@pytest.fixture(scope="session")
def single_run(it_root, it_cache):
    """One plain process, default ZeRO-2 JSON, teacher + hrkd distillation."""
    out = it_root / "single"
    res = run(single_cmd() + train_args(out, it_cache), it_root / "single.log")
    assert_ok(res, "single-process run")
    return out


@pytest.fixture(scope="module")
def test_split(single_run, tmp_path_factory):
    """The single run's own test split as a labelled CSV (label names, one domain column)."""
    import pandas as pd

    from hrkd_ds.config import load_config
    from hrkd_ds.data.splits import load_splits

    raw = load_splits(load_config(str(single_run / "config.yaml")).data)
    rows = [{"text": t, "label": raw.labels[y], "domain": d}
            for d in raw.domains for t, y in zip(raw.splits["test"][d]["text"], raw.splits["test"][d]["label"])]
    path = tmp_path_factory.mktemp("test-split") / "test.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
