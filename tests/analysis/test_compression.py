"""Compression report on tiny random BERTs: counts, bytes, latency keys, retained accuracy, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from hrkd_ds.engine.compression import accuracy_retained, compression_report, count_parameters, main
from hrkd_ds.models.encoder import annotate_config


def _save_bert(path, layers: int, hidden: int, seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=97, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=40, type_vocab_size=2)
    annotate_config(cfg, ["books", "dvd"], ["neg", "pos"])
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    teacher = _save_bert(root / "teacher", layers=4, hidden=32, seed=0)
    student = _save_bert(root / "student", layers=1, hidden=16, seed=1)
    return root, teacher, student


RESULTS = {"teacher": {"test": {"books": 0.9, "dvd": 0.7, "average": 0.8}},
           "student": {"test": {"books": 0.8, "dvd": 0.6, "average": 0.7}, "method": "hrkd"}}


def test_report_counts_sizes_latency(pair):
    root, teacher, student = pair
    threads_before = torch.get_num_threads()
    rep = compression_report(root / "student", root / "teacher", seq_len=16, repeats=2, warmup=1, results=RESULTS,
                             threads=1 if threads_before != 1 else 2)
    assert torch.get_num_threads() == threads_before  # the timing thread count does not leak
    for role, model in (("teacher", teacher), ("student", student)):
        r = rep[role]
        assert r["params"] == sum(p.numel() for p in model.parameters())
        stored = _stored_numel(root / role / "model.safetensors", set(dict(model.named_parameters())))
        assert r["params"] == stored  # every parameter is in the file, once
        emb = sum(p.numel() for p in model.bert.embeddings.parameters())
        assert r["params_non_embedding"] == r["params"] - emb
        assert r["size_bytes"] == (root / role / "model.safetensors").stat().st_size
        assert r["weight_files"] == ["model.safetensors"]
        assert set(r["latency_ms"]) == {"1", "32"} and all(v > 0 for v in r["latency_ms"].values())
        assert r["layers"] == model.config.num_hidden_layers
    assert rep["param_ratio"] == pytest.approx(rep["teacher"]["params"] / rep["student"]["params"])
    assert rep["teacher"]["params"] > rep["student"]["params"]
    for b in ("1", "32"):
        assert rep["speedup"][b] == pytest.approx(rep["teacher"]["latency_ms"][b] / rep["student"]["latency_ms"][b])
    assert rep["accuracy"]["retained_pct"] == pytest.approx(87.5)


def _stored_numel(path, param_names: set[str]) -> int:
    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k in param_names)


def test_accuracy_retained_absent_or_partial():
    assert accuracy_retained({}) is None
    assert accuracy_retained({"teacher": RESULTS["teacher"]}) is None
    assert accuracy_retained(RESULTS, split="dev") is None
    assert accuracy_retained(RESULTS)["retained_pct"] == pytest.approx(100 * 0.7 / 0.8)


def test_count_parameters_counts_tied_once():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, lin)
    assert count_parameters(model)["params"] == 20


def test_seq_len_beyond_positions_rejected(pair):
    root, _, _ = pair
    with pytest.raises(ValueError, match="max_position_embeddings"):
        compression_report(root / "student", root / "teacher", seq_len=41, repeats=1, warmup=0)


def test_cli_prints_table_and_reads_run_layout(tmp_path, capsys):
    # <run>/student/model and <run>/results.json: the CLI finds the results without being told
    _save_bert(tmp_path / "run" / "student" / "model", layers=1, hidden=16, seed=2)
    _save_bert(tmp_path / "run" / "teacher" / "model", layers=2, hidden=16, seed=3)
    (tmp_path / "run" / "results.json").write_text(json.dumps(RESULTS))
    out_json = tmp_path / "rep.json"
    rc = main([str(tmp_path / "run" / "student" / "model"), str(tmp_path / "run" / "teacher" / "model"),
               "--seq-len", "8", "--repeats", "1", "--warmup", "0", "--batch-sizes", "1", "4", "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "latency batch 1 (ms)" in text and "latency batch 4 (ms)" in text
    assert "accuracy retained: 87.50%" in text
    rep = json.loads(out_json.read_text())
    assert set(rep["speedup"]) == {"1", "4"} and rep["accuracy"]["retained_pct"] == pytest.approx(87.5)


def _cell(student_avg: float, teacher_avg: float, ms: float):
    from types import SimpleNamespace

    acc = accuracy_retained({"teacher": {"test": {"average": teacher_avg}}, "student": {"test": {"average": student_avg}}})
    rep = {"student": {"params": 10, "size_bytes": 2**20, "latency_ms": {"1": ms, "32": 8 * ms}},
           "teacher": {"params": 40, "size_bytes": 4 * 2**20, "latency_ms": {"1": 3 * ms, "32": 24 * ms}},
           "speedup": {"1": 3.0, "32": 3.0}, "accuracy": acc}
    return SimpleNamespace(results={"student": {"compression": rep}}, timing=lambda: None)


def test_slice_summary_retained_is_ratio_of_means_latency_is_median():
    from hrkd_ds.analysis.compression_summary import render_compression, summarize_compression

    # seeds 0.70, 0.71, 0.80 of a 0.80 teacher: the median run retains 88.75%, the means 92.08%
    cells = {1: _cell(0.70, 0.80, 1.0), 2: _cell(0.71, 0.80, 2.0), 3: _cell(0.80, 0.80, 9.0)}
    (row,) = summarize_compression({"kd": cells})
    assert row["n"] == 3 and row["retained_pct"] == pytest.approx(100 * (2.21 / 3) / 0.80)
    assert row["latency_ms"]["1"] == pytest.approx(2.0) and row["teacher_latency_ms"]["32"] == pytest.approx(48.0)
    assert any("| 92.1% |" in line for line in render_compression([row]))


def test_slice_summary_without_accuracy_shows_a_dash():
    from hrkd_ds.analysis.compression_summary import render_compression, summarize_compression

    cell = _cell(0.7, 0.8, 1.0)
    cell.results["student"]["compression"]["accuracy"] = None
    (row,) = summarize_compression({"none": {1: cell}})
    assert row["retained_pct"] is None and render_compression([row])[-1].endswith("| – | – |")  # no accuracy, no timing
