"""Model card: the facts it states come from info and the export, and its code example really works."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from hrkd_ds.data.tokenizer import sentencepiece_to_hf, train_sentencepiece
from hrkd_ds.models.encoder import annotate_config
from hrkd_ds.tracking.model_card import write_model_card

DOMAINS, LABELS = ["books", "dvd", "kitchen"], ["negative", "positive"]
RESULTS = {"dev": {"books": 0.75, "dvd": 0.5, "kitchen": 0.625, "average": 0.625},
           "test": {"books": 0.8125, "dvd": 0.4375, "kitchen": 0.6875, "average": 0.6458}}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny export laid out as the trainer writes one: HF weights + tokenizer + hrkd.json."""
    out = tmp_path_factory.mktemp("card") / "model"
    lines = ["a good book", "a bad dvd", "kitchen knives are sharp", "terrible and boring", "lovely film"] * 20
    tokenizer = sentencepiece_to_hf(train_sentencepiece(iter(lines), 60, "unigram"), "unigram")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, pad_token_id=0)
    annotate_config(config, DOMAINS, LABELS)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "hrkd.json").write_text(json.dumps({"domains": DOMAINS, "labels": LABELS, "role": "student"}))
    return out, model


def test_card_states_shapes_accuracy_compression_and_command(export, tmp_path):
    model_dir, _ = export
    info = {"method": "hrkd", "base": "teacher layers [2, 4]", "teacher": {"layers": 4, "hidden": 16, "heads": 2, "intermediate": 32},
            "results": RESULTS, "compression": {"params": (250, 1000), "size_bytes": (2**20, 4 * 2**20), "latency_ms": (1.5, 6.0)},
            "max_seq_len": 16, "model_path": "runs/x/student/model", "command": "python hrkd_ds/train.py output_dir=runs/x"}
    card = write_model_card(model_dir, info).read_text()
    assert card.startswith("# hrkd-ds student: BertForSequenceClassification, 3 domains x 2 labels")
    assert "(method `hrkd`)" in card and "teacher layers [2, 4]" in card
    assert "| layers | 2 | 4 |" in card and "| attention heads | 2 | 2 |" in card
    assert "Domains (K=3): books, dvd, kitchen" in card and "Labels (C=2): negative, positive" in card
    assert "`[d*2, (d+1)*2)`" in card
    assert "| kitchen | 0.6250 | 0.6875 |" in card and "| average | 0.6250 | 0.6458 |" in card
    assert "| parameters | 250 | 1,000 | 25.0% |" in card
    assert "| size on disk | 1.00 MiB | 4.00 MiB | 25.0% |" in card and "| latency (ms) | 1.50 | 6.00 | 25.0% |" in card
    assert "model_dir = 'runs/x/student/model'" in card and str(model_dir) not in card  # not the temp dir
    assert "hrkd-predict runs/x/student/model data.csv" in card
    assert "python hrkd_ds/train.py output_dir=runs/x" in card
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == []  # atomic: no temp left


def test_card_without_optional_facts(export):
    model_dir, _ = export
    card = write_model_card(model_dir, {}).read_text()
    assert card.startswith("# hrkd-ds student:")  # role from hrkd.json
    assert "## Accuracy" not in card and "## Size and speed" not in card and "## How it was made" not in card
    assert "| layers | 2 |" in card and "max_length=128" in card


def test_code_example_runs_and_slices_the_right_logits(export, monkeypatch, capsys):
    model_dir, model = export
    card = write_model_card(model_dir, {"max_seq_len": 16}).read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "model_card_example", "exec"), scope)  # noqa: S102 - the card's own example
    printed = capsys.readouterr().out
    assert any(label in printed for label in LABELS)
    batch = scope["batch"]
    with torch.no_grad():
        logits = model(**batch).logits  # (1, K*C)
    d = DOMAINS.index("kitchen")  # the example picks the last domain: an offset error shows
    expected = logits[:, d * 2:(d + 1) * 2].softmax(-1)
    assert torch.allclose(scope["probs"], expected, atol=1e-6)
