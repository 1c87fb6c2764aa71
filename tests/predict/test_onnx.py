"""hrkd-export-onnx and ONNX serving on a tiny export: dynamic shapes, predict parity, refusals."""

from __future__ import annotations

import json

import onnx
import pandas as pd
import pytest
import torch

from hrkd_ds.engine.onnx_export import export_onnx
from hrkd_ds.export_onnx import main as export_main
from hrkd_ds.models.loading import load_export
from hrkd_ds.models.onnx_model import SKIP_LAYER_NORM_FUSION, load_onnx_export
from hrkd_ds.predict import encode
from hrkd_ds.predict import main as predict_main

TEXTS = ["a good book", "a bad dvd and more words about it", "kitchen knives are sharp", "terrible", "lovely film " * 9]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx-in") / "rows.csv"
    pd.DataFrame({"text": TEXTS * 8, "domain": (["books", "dvd", "kitchen"] * 14)[:40]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def onnx_file(tiny_export, table, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    report = out.with_suffix(".json")
    assert export_main([str(tiny_export), str(out), "--examples", str(table), "--repeats", "1", "--warmup", "0",
                        "--json", str(report)]) == 0
    return out, json.loads(report.read_text())


def test_report_bounds_parity_and_times_three_runtimes(onnx_file):
    _, rep = onnx_file
    p = rep["parity"]
    assert p["examples"] == 40 and p["argmax_agreement"] == 1.0 and p["max_abs_logit_diff"] < 1e-4
    assert len(p["batch_lengths"]) >= 1
    assert set(rep["latency_ms"]) == {"1", "32"}
    assert all(v > 0 for ms in rep["latency_ms"].values() for v in ms.values())
    assert set(rep["latency_ms"]["32"]) == {"torch_fp32", "torch_fp32_sdpa", "torch_int8", "onnxruntime"}


@pytest.mark.parametrize("batch_size, texts", [(1, TEXTS[:1]), (5, TEXTS)], ids=["b1-short", "b5-long"])
def test_dynamic_batch_and_length_match_pytorch(tiny_export, onnx_file, batch_size, texts):
    served = load_onnx_export(onnx_file[0])
    export = load_export(tiny_export)
    for length in (4, 24):  # two lengths per batch size: truncated short, and the full position range
        batch = encode(export.tokenizer, texts, None, length)
        assert batch["input_ids"].shape[0] == batch_size
        with torch.no_grad():
            ours = export.model(**batch, domain_ids=torch.zeros(batch_size, dtype=torch.long)).all_logits
        theirs = served.all_logits(batch)
        assert theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=1e-4), (length, (theirs - ours).abs().max())


def test_the_file_carries_its_tokenizer_and_layout(tiny_export, onnx_file):
    served = load_onnx_export(onnx_file[0])
    export = load_export(tiny_export)
    assert served.domains == export.domains and served.labels == export.labels and served.max_seq_len == 24
    assert served.tokenizer(TEXTS[1])["input_ids"] == export.tokenizer(TEXTS[1])["input_ids"]
    dims = [d.dim_param for d in onnx.load(str(onnx_file[0])).graph.input[0].type.tensor_type.shape.dim]
    assert all(dims), dims  # both axes symbolic


def test_the_graph_is_fused_and_says_so(onnx_file):
    """ONNX Runtime's BERT fusions are in the file (engine/onnx_export.py), and its metadata and the report name them."""
    path, rep = onnx_file
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Attention", "EmbedLayerNormalization", "BiasGelu", "LayerNormalization"} <= ops
    assert "SkipLayerNormalization" not in ops  # measured slower than Add + LayerNormalization
    assert rep["fusions"]["Attention"] == 2 and load_onnx_export(path).fusions == rep["fusions"]


def test_sessions_leave_skip_layer_norm_unfused_as_the_file_asks(onnx_file, tmp_path):
    """The file names SkipLayerNormFusion, and ONNX Runtime knows that name: a session given it
    keeps Add + LayerNormalization, one without it fuses them back (a misspelt name would not)."""
    import onnxruntime as ort

    path = onnx_file[0]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["hrkd_disabled_optimizers"]) == [SKIP_LAYER_NORM_FUSION]

    def optimized_ops(disabled):
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"opt{len(disabled)}.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]

    assert "SkipLayerNormalization" not in optimized_ops([SKIP_LAYER_NORM_FUSION])
    assert "SkipLayerNormalization" in optimized_ops([])


def test_a_left_padding_tokenizer_is_exported_unfused(tiny_export, tmp_path):
    """The fused Attention reads the mask as lengths; a tokenizer that pads on the left gets the plain graph."""
    export = load_export(tiny_export)
    export.tokenizer.padding_side = "left"
    export_onnx(export, tmp_path / "left.onnx")
    served = load_onnx_export(tmp_path / "left.onnx")
    assert served.fusions == {} and "Attention" not in {n.op_type for n in onnx.load(str(tmp_path / "left.onnx")).graph.node}
    batch = encode(export.tokenizer, TEXTS, None, 24)  # the trainer's right padding, moved to the left
    lengths = batch["attention_mask"].sum(1)
    batch = {k: torch.stack([v[i].roll(int(v.shape[1] - n)) for i, n in enumerate(lengths)]) for k, v in batch.items()}
    assert (batch["attention_mask"][:, 0] == 0).any()
    with torch.no_grad():
        ours = export.model(**batch, domain_ids=torch.zeros(len(TEXTS), dtype=torch.long)).all_logits
    assert torch.allclose(served.all_logits(batch), ours, atol=1e-4)  # the fused graph would miss this (checked)


def test_predict_on_onnx_equals_predict_on_pytorch(tiny_export, onnx_file, table, tmp_path):
    for src, name in ((tiny_export, "torch.csv"), (onnx_file[0], "onnx.csv")):
        assert predict_main([str(src), str(table), "-o", str(tmp_path / name), "--device", "cpu", "--batch-size", "7"]) == 0
    a, b = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert a["prediction"].tolist() == b["prediction"].tolist()
    assert (a["probability"] - b["probability"]).abs().max() < 1e-4


def _one_line(capsys, fn, argv, code: int, needle: str, prog: str) -> None:
    with pytest.raises(SystemExit) as exc:
        rc = fn([str(a) for a in argv])
        raise SystemExit(rc)
    assert exc.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: ") and needle in err[0], err


def test_bad_inputs_are_one_line_and_write_nothing(tiny_export, onnx_file, table, tmp_path, capsys):
    other = tmp_path / "other.onnx"  # a valid ONNX model that is not ours
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(other), input_names=["x"], dynamo=False)
    out = tmp_path / "out.csv"
    _one_line(capsys, predict_main, [other, table, "-o", out], 2, "not an hrkd ONNX export", "hrkd-predict")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    _one_line(capsys, predict_main, [tmp_path / "junk.onnx", table, "-o", out], 2, "cannot load it with ONNX Runtime", "hrkd-predict")
    _one_line(capsys, predict_main, [onnx_file[0], table, "-o", out, "--precision", "int8"], 2, "--precision int8", "hrkd-predict")
    assert not out.exists()

    target = tmp_path / "x.onnx"
    plain = tmp_path / "plain"
    plain.mkdir()
    _one_line(capsys, export_main, [plain, target, "--examples", table], 2, "not an hrkd export (no config.json)", "hrkd-export-onnx")
    _one_line(capsys, export_main, [tiny_export, tmp_path / "x.bin", "--examples", table], 2, "must be an .onnx file", "hrkd-export-onnx")
    _one_line(capsys, export_main, [tiny_export, target], 2, "pass --examples FILE", "hrkd-export-onnx")  # no run around it
    # a check that cannot pass: one line, exit 1, and no file (not even a temp one) is left
    _one_line(capsys, export_main, [tiny_export, target, "--examples", table, "--atol", "1e-30", "--no-latency"], 1,
              "nothing written", "hrkd-export-onnx")
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
