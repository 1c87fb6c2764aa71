"""hrkd-predict on a real export: the trainer's accuracy reproduced from a file, formats, and bad input.

Uses the session's single-process run (`single_run`: tiny settings, data.max_seq_len=32); its
exports carry no model card, so these tests also show that predict does not need one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import datasets
import pandas as pd
import pytest
from integration_helpers import REPO, child_env, read_results

from hrkd_ds.data.multidomain import tokenize_splits
from hrkd_ds.data.splits import FEATURES, SPLITS, RawSplits
from hrkd_ds.predict import encode, load_export, main

DOMAINS = ["books", "dvd", "electronics", "kitchen"]



def _predict(*args: str) -> None:
    assert main([*map(str, args), "--device", "cpu"]) == 0


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_accuracy_from_a_file_equals_the_trainers(single_run, test_split, tmp_path, role):
    out = tmp_path / "pred.csv"
    _predict(single_run / role / "model", test_split, "--output", out, "--batch-size", "7")  # batches straddle domains
    got = pd.read_csv(out, dtype={"text": str})
    given = pd.read_csv(test_split, dtype={"text": str})
    assert list(got.columns) == ["text", "label", "domain", "prediction", "probability"]
    assert got[["text", "label", "domain"]].equals(given)  # same rows, same order
    assert got["probability"].between(0.5, 1.0).all()  # two labels: the chosen one has at least half
    expected = read_results(single_run)[role]["test"]
    for d in DOMAINS:
        rows = got[got["domain"] == d]
        assert len(rows) > 0
        assert float((rows["prediction"] == rows["label"]).mean()) == expected[d], (role, d)


def test_formats_single_domain_and_recorded_max_seq_len(single_run, tmp_path):
    """JSONL in, Parquet and TSV out; --domain instead of a column; hrkd.json's max_seq_len is used."""
    texts = ["NA", "007", "great " * 60, "terrible, broke after a day"]
    src = tmp_path / "in.jsonl"
    pd.DataFrame({"review": texts, "id": [1, 2, 3, 4]}).to_json(src, orient="records", lines=True)
    model = tmp_path / "model"
    shutil.copytree(single_run / "student" / "model", model)

    _predict(model, src, "--output", tmp_path / "a.parquet", "--text-column", "review", "--domain", "dvd")
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert a["review"].tolist() == texts and a["id"].tolist() == [1, 2, 3, 4]
    _predict(model, src, "--output", tmp_path / "short.tsv", "--text-column", "review", "--domain", "dvd",
             "--max-seq-len", "4")
    short = pd.read_csv(tmp_path / "short.tsv", sep="\t", dtype={"review": str}, keep_default_na=False)
    assert short["review"].tolist() == texts

    meta = json.loads((model / "hrkd.json").read_text())
    (model / "hrkd.json").write_text(json.dumps({**meta, "max_seq_len": 4}))
    _predict(model, src, "--output", tmp_path / "recorded.tsv", "--text-column", "review", "--domain", "dvd")
    recorded = pd.read_csv(tmp_path / "recorded.tsv", sep="\t", dtype={"review": str}, keep_default_na=False)
    assert recorded["probability"].tolist() == short["probability"].tolist()
    assert recorded["probability"].tolist() != a["probability"].tolist()  # 4 tokens really is a different input


def test_pairs_and_truncation_tokenized_like_the_trainer(single_run):
    """predict.encode against the trainer's tokenize_splits on a pair task, long rows truncated."""
    export = load_export(single_run / "student" / "model")
    text = ["a fine book", "long " * 80, "x"]
    pair = ["so so", "", "another long pair " * 30]
    ds = datasets.Dataset.from_dict({"text": text, "text_pair": pair, "label": [0, 1, 0]}, features=FEATURES)
    raw = RawSplits(domains=["books"], labels=["negative", "positive"], splits={s: {"books": ds} for s in SPLITS})
    trainer = tokenize_splits(raw, export.tokenizer, 32, "").splits["test"]["books"]
    ours = encode(export.tokenizer, text, pair, 32)
    for i in range(len(text)):
        n = int(ours["attention_mask"][i].sum())
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert ours[key][i, :n].tolist() == trainer[i][key], (i, key)
        assert ours["input_ids"][i, n:].eq(export.tokenizer.pad_token_id).all()
    assert max(len(r) for r in trainer["input_ids"]) == 32
    assert 1 in trainer[2]["token_type_ids"]  # the pair really is segment 1


def _expect_error(capsys, argv: list, needle: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hrkd-predict: error: ") and needle in err[0], err


def test_bad_input_is_one_line_and_exit_2(single_run, test_split, tmp_path, capsys):
    model = single_run / "student" / "model"
    out = tmp_path / "out.csv"
    pd.DataFrame({"text": ["ok", "fine"], "domain": ["books", "garden"]}).to_csv(tmp_path / "garden.csv", index=False)
    _expect_error(capsys, [model, tmp_path / "garden.csv", "-o", out], "row 2: domain 'garden'")
    _expect_error(capsys, [model, test_split, "-o", out, "--domain", "garden"], "--domain 'garden'")
    _expect_error(capsys, [model, test_split, "-o", out, "--text-column", "body"], "missing column 'body'")
    _expect_error(capsys, [model, test_split, "-o", out, "--domain-column", "genre"], "missing column 'genre'")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    _expect_error(capsys, [model, tmp_path / "broken.parquet", "-o", out], "broken.parquet: cannot read it as parquet")
    _expect_error(capsys, [model, tmp_path / "absent.csv", "-o", out], "input file not found")
    _expect_error(capsys, [model, test_split, "-o", tmp_path / "out.xlsx"], "unsupported file type '.xlsx'")
    _expect_error(capsys, [model, test_split, "-o", out, "--max-seq-len", "33"], "max_position_embeddings 32")
    plain = tmp_path / "plain"
    plain.mkdir()
    _expect_error(capsys, [plain, test_split, "-o", out], "not an hrkd export (no config.json)")
    (plain / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": 2}))
    _expect_error(capsys, [plain, test_split, "-o", out], "not an hrkd export (config.json lacks")
    assert not out.exists()


def test_module_entry_point_exits_2_with_one_line(tmp_path):
    pd.DataFrame({"text": ["ok"], "domain": ["books"]}).to_csv(tmp_path / "in.csv", index=False)
    res = subprocess.run([sys.executable, "-m", "hrkd_ds.predict", str(tmp_path), str(tmp_path / "in.csv"), "-o",
                          str(tmp_path / "out.csv")], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"hrkd-predict: error: {tmp_path}: not an hrkd export (no config.json); "
                                               "pass RUN/student/model or RUN/teacher/model"]
