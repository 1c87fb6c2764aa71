"""Serving the shipped sample's student: the run's int8 export and its measured accuracy, an ONNX
file checked on the run's own dev split, and hrkd-predict on every format reproducing results.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from integration_helpers import read_results

from hrkd_ds.engine.compression import main as compression_main
from hrkd_ds.config import load_config
from hrkd_ds.data.splits import load_splits
from hrkd_ds.export_onnx import main as export_main
from hrkd_ds.predict import main as predict_main

DOMAINS = ["books", "dvd", "electronics", "kitchen"]



@pytest.fixture(scope="module")
def onnx_export(single_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    report = out.with_suffix(".json")
    assert export_main([str(single_run / "student" / "model"), str(out), "--repeats", "2", "--json", str(report)]) == 0
    return out, json.loads(report.read_text())


def _accuracy(model, test_split, out, *extra: str) -> dict[str, float]:
    assert predict_main([str(model), str(test_split), "-o", str(out), "--device", "cpu", "--batch-size", "5", *extra]) == 0
    got = pd.read_csv(out)
    return {d: float((rows["prediction"] == rows["label"]).mean()) for d, rows in got.groupby("domain")}


def test_the_run_writes_int8_and_its_accuracy_is_what_predict_measures(single_run, test_split, tmp_path):
    int8_dir = single_run / "student" / "model-int8"
    assert json.loads((int8_dir / "hrkd.json").read_text())["precision"] == "int8"
    card = (int8_dir / "README.md").read_text()
    assert "# hrkd-ds student (int8)" in card and "## Accuracy (measured on the int8 model)" in card
    assert "## int8 variant" in (single_run / "student" / "model" / "README.md").read_text()
    student = read_results(single_run)["student"]
    recorded = student["int8"]["test"]
    assert set(recorded) == {*DOMAINS, "average"}
    measured = _accuracy(int8_dir, test_split, tmp_path / "int8.csv")
    assert measured == {d: recorded[d] for d in DOMAINS}  # the quantized model's own accuracy, per domain
    in_memory = _accuracy(single_run / "student" / "model", test_split, tmp_path / "q.csv", "--precision", "int8")
    assert pd.read_csv(tmp_path / "q.csv").equals(pd.read_csv(tmp_path / "int8.csv")) and in_memory == measured
    rep = student["compression"]["int8"]
    assert rep["test"] == recorded and rep["size_bytes"] < student["compression"]["student"]["size_bytes"]
    assert set(rep["latency_ms"]) == {"1", "32"} and rep["retained_pct_of_fp32"] == pytest.approx(
        100 * recorded["average"] / student["test"]["average"])


def test_onnx_matches_on_the_runs_dev_split(single_run, onnx_export):
    _, rep = onnx_export
    dev = load_splits(load_config(str(single_run / "config.yaml")).data).splits["dev"]
    p = rep["parity"]
    assert p["examples"] == sum(len(dev[d]) for d in DOMAINS)  # the whole dev split, real text
    assert p["argmax_agreement"] >= 0.995 and p["max_abs_logit_diff"] <= 1e-3
    assert all(ms["onnxruntime"] > 0 for ms in rep["latency_ms"].values())


def test_predict_on_onnx_reproduces_the_trainers_test_accuracy(single_run, onnx_export, test_split, tmp_path):
    expected = read_results(single_run)["student"]["test"]
    assert _accuracy(onnx_export[0], test_split, tmp_path / "onnx.csv") == {d: expected[d] for d in DOMAINS}


def test_compression_cli_times_int8_and_onnx_beside_fp32(single_run, onnx_export, tmp_path, capsys):
    out = tmp_path / "rep.json"
    assert compression_main([str(single_run / "student" / "model"), str(single_run / "teacher" / "model"), "--seq-len", "32",
                             "--repeats", "1", "--warmup", "0", "--onnx", str(onnx_export[0]), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PyTorch int8" in text and "ONNX Runtime fp32" in text  # int8 found beside the model without being told
    rep = json.loads(out.read_text())
    assert rep["int8"]["test"] == read_results(single_run)["student"]["int8"]["test"]
    assert set(rep["onnx"]["latency_ms"]) == {"1", "32"} and rep["onnx"]["size_bytes"] > 0
