"""Readers and splits on the shipped sample, the full shared data (when present) and bad inputs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from data_helpers import REPO, shared

from hrkd_ds.config import DataConfig
from hrkd_ds.data import load_splits, read_amazon, read_mnli, read_table, sample_dir
from hrkd_ds.data.splits import describe
from hrkd_ds.errors import UserError

DOMAINS = ["books", "dvd", "electronics", "kitchen"]
GENRES = ["fiction", "government", "slate", "telephone", "travel"]


# ---------------------------------------------------------------- shipped sample
def test_sample_shipped_small_and_complete():
    root = sample_dir() / "amazon"
    files = sorted(root.glob("*/*.review.gz"))
    assert [f"{f.parent.name}/{f.name.split('.')[0]}" for f in files] == [f"{d}/{l}" for d in DOMAINS for l in ("negative", "positive")]
    assert sum(f.stat().st_size for f in files) <= 2_000_000
    assert (sample_dir() / "SOURCE.md").is_file()
    ex = read_amazon(root)
    counts = Counter((e["domain"], e["label"]) for e in ex)
    assert set(counts.values()) == {500} and len(counts) == 8
    assert all(e["text"] and e["text_pair"] == "" for e in ex)
    assert not any("&quot;" in e["text"] for e in ex), "entities unescaped"


def test_sample_splits(sample_raw):
    assert sample_raw.domains == DOMAINS and sample_raw.labels == ["negative", "positive"]
    sizes = describe(sample_raw)
    assert sizes == {"train": dict.fromkeys(DOMAINS, 810), "dev": dict.fromkeys(DOMAINS, 90), "test": dict.fromkeys(DOMAINS, 100)}
    assert set(sample_raw.splits["train"]["books"].column_names) == {"text", "text_pair", "label"}
    ex = read_amazon(sample_dir() / "amazon")
    for d in DOMAINS:  # disjoint and covering (as multisets: the real data holds a few duplicate reviews)
        texts = Counter(t for s in ("train", "dev", "test") for t in sample_raw.splits[s][d]["text"])
        assert texts == Counter(e["text"] for e in ex if e["domain"] == d)


def test_splits_deterministic_and_domain_independent(sample_raw):
    again = load_splits(DataConfig(domains=["kitchen", "books"]))
    assert again.domains == ["kitchen", "books"]
    for d in again.domains:
        for s in ("train", "dev", "test"):
            assert list(again.splits[s][d]["text"]) == list(sample_raw.splits[s][d]["text"])
    other = load_splits(DataConfig(domains=["books"], split_seed=1))
    assert list(other.splits["test"]["books"]["text"]) != list(sample_raw.splits["test"]["books"]["text"])


def test_splits_independent_of_hash_seed(sample_raw):
    code = "from hrkd_ds.data import load_splits; from hrkd_ds.config import DataConfig; import json; r = load_splits(DataConfig()); print(json.dumps([r.labels, r.fingerprint]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [sample_raw.labels, sample_raw.fingerprint]


def test_few_shot_balanced_seeded_dev_test_untouched(sample_raw):
    cfg = DataConfig(train_fraction=0.1)
    few, again = load_splits(cfg), load_splits(cfg)
    for d in DOMAINS:
        full_y = Counter(sample_raw.splits["train"][d]["label"])
        few_y = Counter(few.splits["train"][d]["label"])
        assert few_y == {c: int(0.1 * n + 0.5) for c, n in full_y.items()}
        assert set(few.splits["train"][d]["text"]) <= set(sample_raw.splits["train"][d]["text"])
        assert list(few.splits["train"][d]["text"]) == list(again.splits["train"][d]["text"])
        for s in ("dev", "test"):
            assert list(few.splits[s][d]["text"]) == list(sample_raw.splits[s][d]["text"])
    reseeded = load_splits(dataclasses.replace(cfg, split_seed=3, domains=["dvd"]))
    assert Counter(reseeded.splits["train"]["dvd"]["label"]) == Counter(few.splits["train"]["dvd"]["label"])
    tiny = load_splits(DataConfig(train_fraction=0.001, domains=["dvd"]))
    assert Counter(tiny.splits["train"]["dvd"]["label"]) == {0: 1, 1: 1}, "at least one per label"


# ---------------------------------------------------------------- full shared data
def test_full_amazon():
    root = shared("amazon_review")
    raw = load_splits(DataConfig(path=str(root)))
    assert raw.domains == DOMAINS
    for d in DOMAINS:
        sizes = [len(raw.splits[s][d]) for s in ("train", "dev", "test")]
        assert sizes == [1620, 180, 200] and sum(sizes) == 2000
        assert Counter(raw.splits["train"][d]["label"]).keys() == {0, 1}


def test_mnli_nyu_four_columns():
    train, val = shared("mnli", "nyu_subsample", "mnli_train.tsv"), shared("mnli", "nyu_subsample", "mnli_val.tsv")
    ex = read_mnli(train)
    assert len(ex) == 20000
    assert Counter(e["domain"] for e in ex) == {"fiction": 3836, "government": 3883, "slate": 4026, "telephone": 4270, "travel": 3985}
    assert Counter((e["domain"], e["label"]) for e in ex)[("fiction", "entailment")] == 1279
    raw = load_splits(DataConfig(format="mnli", path=str(train), test_path=str(val)))
    assert raw.domains == GENRES and raw.labels == ["contradiction", "entailment", "neutral"]
    assert len(raw.splits["train"]["fiction"]) == 3836 * 9 // 10 and len(raw.splits["dev"]["fiction"]) == 3836 - 3836 * 9 // 10
    assert len(raw.splits["test"]["fiction"]) == 995 and len(raw.splits["test"]["travel"]) == 982
    fiction = [e for e in ex if e["domain"] == "fiction"]
    assert raw.splits["train"]["fiction"][0]["text"] == fiction[0]["text"], "first 90% in file order"
    assert raw.splits["dev"]["fiction"][-1]["text_pair"] == fiction[-1]["text_pair"]


def test_mnli_glue_twelve_columns():
    folder = shared("mnli", "glue_format_kshot", "16-13")
    ex = read_mnli(folder / "train.tsv")
    assert len(ex) == 48 and set(e["domain"] for e in ex) == set(GENRES)
    assert Counter(e["label"] for e in ex) == dict.fromkeys(["contradiction", "entailment", "neutral"], 16)
    assert ex[0]["text"] == "Price caps may sound more attractive with every passing rate case."
    assert ex[0]["text_pair"] == "Rate cases make price caps sound more attractive."
    raw = load_splits(DataConfig(format="mnli", path=str(folder / "train.tsv"), test_path=str(folder / "dev_matched.tsv"), domains=["slate", "fiction"]))
    assert raw.domains == ["slate", "fiction"] and raw.has_pairs
    assert sum(len(raw.splits["test"][d]) for d in raw.domains) == sum(e["domain"] in ("slate", "fiction") for e in read_mnli(folder / "dev_matched.tsv"))


def test_mnli_without_test_file_carves_test(tmp_path):
    rows = [f"premise {i}\thypothesis {i}\t{['entailment', 'neutral', 'contradiction'][i % 3]}\t{['a', 'b'][i % 2]}" for i in range(200)]
    path = tmp_path / "m.tsv"
    path.write_text("sentence1\tsentence2\tlabel\tgenre\n" + "\n".join(rows) + "\n")
    raw = load_splits(DataConfig(format="mnli", path=str(path)))
    sizes = describe(raw)
    assert sizes["test"] == {"a": 10, "b": 10} and sizes["train"] == {"a": 81, "b": 81} and sizes["dev"] == {"a": 9, "b": 9}


# ---------------------------------------------------------------- table format
def _write_table(tmp_path, ext: str, n: int = 60):
    rows = [{"sent": f"text number {i}", "hyp": f"pair {i}", "y": ["no", "yes"][i % 2], "dom": ["x", "y", "z"][i % 3]} for i in range(n)]
    path = tmp_path / f"t.{ext}"
    if ext == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text("sent,hyp,y,dom\n" + "".join(f"{r['sent']},{r['hyp']},{r['y']},{r['dom']}\n" for r in rows))
    return path


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_table(tmp_path, ext):
    path = _write_table(tmp_path, ext)
    cfg = DataConfig(format="table", path=str(path), text_column="sent", text_pair_column="hyp", label_column="y", domain_column="dom", dev_fraction=0.1, test_fraction=0.2)
    ex = read_table(path, cfg)
    assert len(ex) == 60 and ex[1] == {"text": "text number 1", "text_pair": "pair 1", "label": "yes", "domain": "y"}
    raw = load_splits(cfg)
    assert raw.domains == ["x", "y", "z"] and raw.labels == ["no", "yes"]
    assert describe(raw)["test"] == dict.fromkeys("xyz", 4) and describe(raw)["train"] == dict.fromkeys("xyz", 14)
    with_test = load_splits(dataclasses.replace(cfg, test_path=str(_write_table(tmp_path / "..", ext, n=30))))
    assert describe(with_test)["test"] == dict.fromkeys("xyz", 10) and describe(with_test)["train"] == dict.fromkeys("xyz", 18)


# ---------------------------------------------------------------- errors
def _amazon_copy(tmp_path, text="fine review"):
    for d in ("a", "b"):
        for label in ("negative", "positive"):
            (tmp_path / d).mkdir(exist_ok=True)
            (tmp_path / d / f"{label}.review").write_text(f"<reviews>\n<review>\n<review_text>\n{text}\n</review_text>\n</review>\n</reviews>")
    return tmp_path


def test_error_missing_files(tmp_path):
    with pytest.raises(UserError, match="data.path.*nope"):
        load_splits(DataConfig(path=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="data.path.*missing.tsv"):
        load_splits(DataConfig(format="mnli", path=str(tmp_path / "missing.tsv")))
    with pytest.raises(UserError, match="data.path.*missing.csv"):
        load_splits(DataConfig(format="table", path=str(tmp_path / "missing.csv")))
    (_amazon_copy(tmp_path) / "b" / "positive.review").unlink()
    with pytest.raises(UserError, match="positive.review"):
        read_amazon(tmp_path)
    with pytest.raises(UserError, match="data.path: required"):
        load_splits(DataConfig(format="mnli"))


def test_error_empty_domain(tmp_path):
    with pytest.raises(UserError, match="data.domains.*'toys'"):
        load_splits(DataConfig(domains=["books", "toys"]))
    path = _write_table(tmp_path, "csv")
    with pytest.raises(UserError, match="data.domains.*'w'"):
        read_table(path, DataConfig(format="table", path=str(path), text_column="sent", label_column="y", domain_column="dom", domains=["w"]))


def test_error_unknown_label(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("sentence1\tsentence2\tlabel\tgenre\na\tb\tentailment\tg\nc\td\tmaybe\tg\n")
    with pytest.raises(UserError, match="m.tsv.*unknown label 'maybe'"):
        read_mnli(path)
    table = _write_table(tmp_path, "jsonl")
    with pytest.raises(UserError, match="unknown label 'yes'"):
        load_splits(DataConfig(format="table", path=str(table), text_column="sent", label_column="y", domain_column="dom", labels=["no", "maybe"]))


def test_error_empty_text(tmp_path):
    _amazon_copy(tmp_path, text="   ")
    with pytest.raises(UserError, match="negative.review review 1: empty text"):
        read_amazon(tmp_path)
    path = tmp_path / "m.tsv"
    path.write_text("sentence1\tsentence2\tlabel\tgenre\n\tb\tentailment\tg\n")
    with pytest.raises(UserError, match="m.tsv line 2.*empty text"):
        read_mnli(path)


def test_error_missing_column(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("sentence1\tsentence2\tlabel\n" + "a\tb\tentailment\n")
    with pytest.raises(UserError, match="m.tsv: missing column 'genre'"):
        read_mnli(path)
    table = _write_table(tmp_path, "csv")
    with pytest.raises(UserError, match="missing column 'hypothesis' \\(data.text_pair_column\\)"):
        read_table(table, DataConfig(format="table", text_column="sent", text_pair_column="hypothesis", label_column="y", domain_column="dom"))
    short = tmp_path / "s.tsv"
    short.write_text("sentence1\tsentence2\tlabel\tgenre\na\tb\tentailment\n")
    with pytest.raises(UserError, match="s.tsv line 2"):
        read_mnli(short)


def test_domain_without_dev_or_test_examples_is_one_line(tmp_path):
    """A domain too small for a dev split would crash the first evaluation: refused before training."""
    rows = ["text,label,domain"] + [f"text {i},{'yes' if i % 2 else 'no'},big" for i in range(40)] + \
           ["tiny text a,yes,tiny", "tiny text b,no,tiny", "tiny text c,yes,tiny"]
    f = tmp_path / "t.csv"
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match="'tiny' has no (dev|test) examples") as err:
        load_splits(DataConfig(format="table", path=str(f)))
    assert "\n" not in str(err.value)
