"""Table I/O for hrkd-predict: text survives a round trip in every format; writes are atomic."""

from __future__ import annotations

import pandas as pd
import pytest

from hrkd_ds.errors import UserError
from hrkd_ds.io import atomic_output
from hrkd_ds.tables import read_frame, write_frame

TEXTS = ["NA", "007", "", "comma, \"quote\"\tand tab", "ünïcode"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_round_trip_keeps_text_as_written(tmp_path, suffix):
    frame = pd.DataFrame({"text": TEXTS, "domain": ["books"] * len(TEXTS)})
    write_frame(frame, tmp_path / f"t{suffix}")
    back = read_frame(tmp_path / f"t{suffix}")
    assert back["text"].tolist() == TEXTS
    assert [p.name for p in tmp_path.iterdir()] == [f"t{suffix}"]  # no temp file left behind


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_output(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_empty_and_unknown_files_are_user_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("text,domain\n")
    with pytest.raises(UserError, match="no rows"):
        read_frame(tmp_path / "empty.csv")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="bad.jsonl line 1: not valid JSON"):
        read_frame(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="unsupported file type '.txt'"):
        read_frame(tmp_path / "x.txt")
