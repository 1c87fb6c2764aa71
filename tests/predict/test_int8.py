"""int8 exports: the file round trip is exact, the weights really are int8, bad directories are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from hrkd_ds.engine.export import export_int8
from hrkd_ds.errors import UserError
from hrkd_ds.models.int8 import INT8_WEIGHTS
from hrkd_ds.models.loading import load_export
from hrkd_ds.predict import encode

TEXTS = ["a good book", "terrible and boring kitchen knives", "lovely"]


def _logits(export, texts=TEXTS) -> torch.Tensor:
    batch = encode(export.tokenizer, texts, None, 24)
    with torch.no_grad():
        return export.model(**batch, domain_ids=torch.tensor([0, 2, 1][: len(texts)])).all_logits


@pytest.fixture(scope="module")
def int8_dir(tiny_export):
    return export_int8(tiny_export, tiny_export.with_name("model-int8"))


def test_export_reloads_to_the_in_memory_quantization_exactly(tiny_export, int8_dir):
    saved = load_export(int8_dir)
    in_memory = load_export(tiny_export, precision="int8")
    fp32 = load_export(tiny_export)
    assert saved.precision == in_memory.precision == "int8" and fp32.precision == "fp32"
    assert torch.equal(_logits(saved), _logits(in_memory))  # the same packed weights, bit for bit
    diff = (_logits(saved) - _logits(fp32)).abs().max()
    assert 0 < diff < 0.05, diff  # really quantized, and close
    linears = [m for m in saved.model.hf_model.modules() if isinstance(m, torch.nn.Linear)]
    assert not linears and any(isinstance(m, DynamicLinear) for m in saved.model.hf_model.modules())
    meta = json.loads((int8_dir / "hrkd.json").read_text())
    assert meta["precision"] == "int8" and meta["role"] == "student" and meta["source"] == "../model"
    assert saved.max_seq_len == 24 and saved.tokenizer("a good book")["input_ids"] == fp32.tokenizer("a good book")["input_ids"]


def test_weights_on_disk_are_int8_and_smaller(tiny_export, int8_dir):
    with safe_open(str(int8_dir / INT8_WEIGHTS), framework="pt") as f:
        q = f.get_tensor("bert.encoder.layer.0.attention.self.query.weight_int8")
        assert q.dtype == torch.int8 and tuple(q.shape) == (32, 32)
        assert f.get_tensor("bert.encoder.layer.0.attention.self.query.weight_scale").shape == (32,)  # per output channel
        assert f.get_tensor("bert.embeddings.word_embeddings.weight").dtype == torch.float32  # only linears quantized
    linear_bytes = sum(m.weight.numel() * 4 for m in load_export(tiny_export).model.hf_model.modules()
                       if isinstance(m, torch.nn.Linear))
    saved = (tiny_export / "model.safetensors").stat().st_size - (int8_dir / INT8_WEIGHTS).stat().st_size
    assert saved > 0.5 * linear_bytes  # int8 weights: a quarter of the fp32 bytes, plus 9 bytes of scale per row


def test_plain_transformers_refuses_the_int8_directory(int8_dir):
    """No model.safetensors: a Hugging Face loader fails loudly instead of loading random linears."""
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(OSError):
        AutoModelForSequenceClassification.from_pretrained(str(int8_dir))


def test_bad_int8_directories_are_one_line(tiny_export, int8_dir, tmp_path):
    with pytest.raises(UserError, match="holds an int8 export"):
        load_export(int8_dir, precision="fp32")
    with pytest.raises(UserError, match="already an int8 export"):
        export_int8(int8_dir, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    broken = tmp_path / "broken"
    shutil.copytree(int8_dir, broken)
    (broken / INT8_WEIGHTS).unlink()
    with pytest.raises(UserError, match=f"says int8 but {INT8_WEIGHTS} is missing"):
        load_export(broken)
    other = tmp_path / "other"  # int8 weights of a different shape than config.json
    shutil.copytree(int8_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    with pytest.raises(UserError, match="cannot load the model"):
        load_export(other)
    with pytest.raises(UserError, match="precision 'int4' is not one of fp32, int8"):
        (other / "hrkd.json").write_text(json.dumps({"precision": "int4"}))
        load_export(other)
