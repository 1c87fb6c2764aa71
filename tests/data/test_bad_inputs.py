"""Every class of bad input is one UserError line naming the file or field, before any work starts.

A few cases also run the real trainer: exit code 2, a single stderr line, no output_dir.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from data_helpers import REPO

from hrkd_ds.config import DataConfig, ModelConfig
from hrkd_ds.data import load_splits
from hrkd_ds.errors import UserError

TABLE = dict(format="table", text_column="text", label_column="label", domain_column="domain")
REVIEW = "<review_text>\nfine review {i}\n</review_text>\n"


def amazon(root: Path, n: int = 12) -> Path:
    for d in ("a", "b"):
        (root / d).mkdir(parents=True, exist_ok=True)
        for label in ("negative", "positive"):
            (root / d / f"{label}.review").write_text("".join(REVIEW.format(i=i) for i in range(n)))
    return root


def rows(n: int = 20) -> list[dict]:
    return [{"text": f"text {i}", "label": ["neg", "pos"][i % 2], "domain": ["x", "y"][i // 2 % 2]}
            for i in range(n)]


def csv_file(path: Path, records: list[dict]) -> Path:
    path.write_text("text,label,domain\n" + "".join(f"{r['text']},{r['label']},{r['domain']}\n" for r in records))
    return path


def one_line_error(cfg: DataConfig, *needles: str) -> str:
    with pytest.raises(UserError) as info:
        load_splits(cfg)
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


# ---------------------------------------------------------------- each class, through load_splits
def test_empty_review_file_names_domain_and_file(tmp_path):
    root = amazon(tmp_path)
    (root / "b" / "positive.review").write_text("")
    one_line_error(DataConfig(path=str(root)), str(root / "b" / "positive.review"), "domain 'b'", "label 'positive'")


@pytest.mark.parametrize("fmt", ["amazon", "table", "mnli"])
def test_not_utf8(tmp_path, fmt):
    junk = b"\x00\xff\xfe\x9c" * 50
    if fmt == "amazon":
        path = amazon(tmp_path) / "a" / "negative.review"
        cfg = DataConfig(path=str(tmp_path))
    elif fmt == "table":
        path, cfg = tmp_path / "t.csv", DataConfig(path=str(tmp_path / "t.csv"), **TABLE)
    else:
        path, cfg = tmp_path / "m.tsv", DataConfig(format="mnli", path=str(tmp_path / "m.tsv"))
    path.write_bytes(b"text,label\n" + junk)
    one_line_error(cfg, str(path), "not UTF-8", "line 2")


def test_gzip_that_is_not_gzip(tmp_path):
    root = amazon(tmp_path)
    bad = root / "a" / "positive.review.gz"
    (root / "a" / "positive.review").unlink()
    bad.write_bytes(b"plain text, not gzip")
    one_line_error(DataConfig(path=str(root)), str(bad), "not a valid gzip file")
    bad.write_bytes(gzip.compress(REVIEW.format(i=0).encode())[:-12])  # truncated stream
    one_line_error(DataConfig(path=str(root)), str(bad), "not a valid gzip file")


def test_csv_unterminated_quote(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label,domain\nok,pos,x\n"never closed,neg,x\nmore,pos,x\n')
    one_line_error(DataConfig(path=str(path), **TABLE), f"{path} line 3", "malformed CSV")


def test_csv_row_of_wrong_width(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label,domain\nok,pos,x\nhello, world,neg,x\n")
    one_line_error(DataConfig(path=str(path), **TABLE), f"{path} line 3", "4 fields, the header has 3")


@pytest.mark.parametrize("line,what", [('{"text": "a", "label"', "not valid JSON"), ("[1, 2]", "a JSON list")])
def test_jsonl_line_not_an_object(tmp_path, line, what):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(rows(1)[0]) + "\n" + line + "\n")
    one_line_error(DataConfig(path=str(path), **TABLE), f"{path} line 2", what)


@pytest.mark.parametrize("name", ["t.csv", "t.jsonl", "t.parquet", "m.tsv"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    cfg = DataConfig(format="mnli", path=str(path)) if name.endswith("tsv") else DataConfig(path=str(path), **TABLE)
    one_line_error(cfg, str(path))


def test_missing_column_and_empty_value(tmp_path):
    path = csv_file(tmp_path / "t.csv", rows())
    one_line_error(DataConfig(path=str(path), **{**TABLE, "label_column": "y"}), str(path), "missing column 'y' (data.label_column)")
    path.write_text("text,label,domain\nhi,,x\n")
    one_line_error(DataConfig(path=str(path), **TABLE), f"{path} row 1", "empty value in column 'label' (data.label_column)")


def test_label_not_in_label_set(tmp_path):
    path = csv_file(tmp_path / "t.csv", rows())
    one_line_error(DataConfig(path=str(path), labels=["neg", "neutral"], **TABLE), str(path), "unknown label 'pos'")


@pytest.mark.parametrize("row,count", [("a\tb\tentailment\tfiction\textra", 5), ("a\tb\tentailment", 3)])
def test_mnli_wrong_column_count(tmp_path, row, count):
    path = tmp_path / "m.tsv"
    path.write_text("sentence1\tsentence2\tlabel\tgenre\na\tb\tneutral\tfiction\n" + row + "\n")
    one_line_error(DataConfig(format="mnli", path=str(path)), f"{path} line 3", f"{count} tab-separated columns, the header has 4")


def test_unknown_domain(tmp_path):
    one_line_error(DataConfig(path=str(amazon(tmp_path)), domains=["a", "toys"]), "data.domains", "'toys'", "found: a, b")


def test_domain_too_small_for_the_split(tmp_path):
    path = csv_file(tmp_path / "t.csv", rows() + [{"text": f"lonely {i}", "label": "pos", "domain": "tiny"} for i in range(2)])
    one_line_error(DataConfig(path=str(path), dev_fraction=0.5, test_fraction=0.5, **TABLE), "domain 'tiny'", "no training examples")


# ---------------------------------------------------------------- Parquet and save_to_disk
def test_parquet_reads_like_csv_and_bad_parquet_is_one_line(tmp_path):
    records = rows()
    datasets.Dataset.from_list(records).to_parquet(str(tmp_path / "t.parquet"))
    parquet = load_splits(DataConfig(path=str(tmp_path / "t.parquet"), **TABLE))
    csv = load_splits(DataConfig(path=str(csv_file(tmp_path / "t.csv", records)), **TABLE))
    assert parquet.fingerprint == csv.fingerprint
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    one_line_error(DataConfig(path=str(tmp_path / "bad.parquet"), **TABLE), str(tmp_path / "bad.parquet"), "cannot read it as parquet")


def test_saved_dataset_and_datasetdict(tmp_path):
    records = rows(40)
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"))
    csv = load_splits(DataConfig(path=str(csv_file(tmp_path / "t.csv", records)), **TABLE))
    assert load_splits(DataConfig(path=str(tmp_path / "ds"), **TABLE)).fingerprint == csv.fingerprint

    labels = datasets.ClassLabel(names=["neg", "pos"])
    feats = datasets.Features({"text": datasets.Value("string"), "label": labels, "domain": datasets.Value("string")})
    split = lambda rs: datasets.Dataset.from_list([{**r, "label": labels.str2int(r["label"])} for r in rs], features=feats)  # noqa: E731
    dd = datasets.DatasetDict({"train": split(records), "validation": split(rows(6)), "test": split(rows(8)), "other": split(rows(2))})
    dd.save_to_disk(str(tmp_path / "dd"))
    raw = load_splits(DataConfig(path=str(tmp_path / "dd"), **TABLE))
    assert raw.labels == ["neg", "pos"]  # ClassLabel ids came back as names
    assert {s: sum(len(ds) for ds in raw.splits[s].values()) for s in raw.splits} == {"train": 40, "dev": 6, "test": 8}

    one_line_error(DataConfig(path=str(tmp_path / "dd"), test_path=str(tmp_path / "t.csv"), **TABLE), "data.test_path", "already has a test split")
    datasets.DatasetDict({"train": split(records), "validation": split(rows(4)), "dev": split(rows(4))}).save_to_disk(str(tmp_path / "both"))
    one_line_error(DataConfig(path=str(tmp_path / "both"), **TABLE), "'validation' and 'dev'")
    datasets.DatasetDict({"training": split(records)}).save_to_disk(str(tmp_path / "notrain"))
    one_line_error(DataConfig(path=str(tmp_path / "notrain"), **TABLE), str(tmp_path / "notrain"), "none named 'train'")
    (tmp_path / "empty_dir").mkdir()
    one_line_error(DataConfig(path=str(tmp_path / "empty_dir"), **TABLE), "data.path", "save_to_disk")
    test_only = datasets.DatasetDict({"train": split([r for r in records if r["domain"] == "x"])})
    test_only.save_to_disk(str(tmp_path / "xonly"))
    one_line_error(DataConfig(path=str(tmp_path / "t.csv"), test_path=str(tmp_path / "xonly"), **TABLE), "'y'", "xonly")


# ---------------------------------------------------------------- model and tokenizer directories
def _tiny_model_dir(path: Path) -> Path:
    from hrkd_ds.models.build import build_model

    build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), 1, 2, 50, 0, 16).save_pretrained(path)
    return path


def test_model_dir_checks(tmp_path):
    from hrkd_ds.models.checks import check_model_dir
    from hrkd_ds.models.build import build_model

    def err(path, field="teacher.pretrained", **kw) -> str:
        with pytest.raises(UserError) as info:
            check_model_dir(path, field, **kw)
        assert "\n" not in str(info.value) and field in str(info.value) and str(path) in str(info.value)
        return str(info.value)

    assert "directory not found" in err(tmp_path / "nope")
    assert "no config.json" in err(tmp_path)
    model = _tiny_model_dir(tmp_path / "m")
    check_model_dir(model, "teacher.pretrained")
    os.replace(model / "model.safetensors", model / "pytorch_model.bin")
    assert "only pickled pytorch_model.bin" in err(model) and "safe_serialization=True" in err(model)
    (model / "pytorch_model.bin").unlink()
    assert "no model weights" in err(model, "student.pretrained")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    assert "model-00001-of-00002.safetensors" in err(model)
    assert "no tokenizer files" in err(model, "tokenizer.path", weights=False, tokenizer=True)
    with pytest.raises(UserError, match="directory not found"):  # build_model checks before Hugging Face's repo-id errors
        build_model(ModelConfig(pretrained=str(tmp_path / "nope"), init="pretrained"), 1, 2, 50, 0, 16)


def test_tokenizer_fit_and_mismatch(tmp_path, sample_tokenizer):
    from transformers import AutoConfig

    from hrkd_ds.data.tokenizer import load_pretrained
    from hrkd_ds.models.checks import check_fit, check_tokenizer_matches

    cfg = AutoConfig.from_pretrained(str(_tiny_model_dir(tmp_path / "m")))
    with pytest.raises(UserError, match="tokenizer vocab 51 exceeds the model's vocab_size 50"):
        check_fit(cfg, 51, 0, 16, "teacher_from")
    with pytest.raises(UserError, match="teacher_from: tokenizer pad id 3 differs from the model's pad_token_id 0"):
        check_fit(cfg, 50, 3, 16, "teacher_from")
    with pytest.raises(UserError, match="tokenizer.path: directory not found"):
        load_pretrained(tmp_path / "nope")
    sample_tokenizer.save_pretrained(tmp_path / "m")
    check_tokenizer_matches(tmp_path / "m", sample_tokenizer, "teacher.pretrained")
    other = tmp_path / "other"
    sample_tokenizer.save_pretrained(other)
    vocab = json.loads((other / "tokenizer.json").read_text())
    vocab["model"]["vocab"][-1][0] = "zzz-not-in-the-other"
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    with pytest.raises(UserError, match="ships its own tokenizer"):
        check_tokenizer_matches(tmp_path / "m", load_pretrained(other), "teacher.pretrained")


# ---------------------------------------------------------------- the real trainer
def _bad_csv(tmp: Path) -> Path:
    (tmp / "q.csv").write_text('text,label,domain\nok,pos,x\n"never closed,neg,x\n')
    return tmp / "q.csv"


def _binary(tmp: Path) -> Path:
    (tmp / "b.csv").write_bytes(b"text,label,domain\n" + os.urandom(400).replace(b"\n", b""))
    return tmp / "b.csv"


def _mnli_extra(tmp: Path) -> Path:
    (tmp / "m.tsv").write_text("sentence1\tsentence2\tlabel\tgenre\na\tb\tneutral\tfiction\tX\n")
    return tmp / "m.tsv"


@pytest.mark.parametrize("make,fmt,needle", [(_bad_csv, "table", "malformed CSV"), (_binary, "table", "not UTF-8"),
                                             (_mnli_extra, "mnli", "tab-separated columns")])
def test_trainer_exits_2_with_one_line_and_writes_nothing(tmp_path, make, fmt, needle):
    path = make(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "hrkd_ds/train.py", f"output_dir={out}", f"data.format={fmt}", f"data.path={path}",
                          f"data.cache_dir={tmp_path / 'cache'}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("hrkd_ds: error: ") and str(path) in lines[0] and needle in lines[0]
    assert not out.exists() and not (tmp_path / "cache").exists()
