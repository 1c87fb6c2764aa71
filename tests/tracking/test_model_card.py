"""Model card: the facts it states come from info and the export, its Hub metadata parses and
names no local path, and its code example really works."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import yaml
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


def _split(card: str) -> tuple[dict, str]:
    """(the YAML front matter, the Markdown after it)."""
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body.lstrip("\n")


def test_card_states_shapes_accuracy_compression_and_command(export, tmp_path):
    model_dir, _ = export
    info = {"method": "hrkd", "base": "teacher layers [2, 4]", "teacher": {"layers": 4, "hidden": 16, "heads": 2, "intermediate": 32},
            "results": RESULTS, "compression": {"params": (250, 1000), "size_bytes": (2**20, 4 * 2**20), "latency_ms": (1.5, 6.0)},
            "max_seq_len": 16, "command": "python hrkd_ds/train.py output_dir=runs/x", "run_dir": "runs/x"}
    meta, card = _split(write_model_card(model_dir, info).read_text())
    assert card.startswith("# hrkd-ds student: BertForSequenceClassification, 3 domains x 2 labels")
    assert "(method `hrkd`)" in card and "teacher layers [2, 4]" in card
    assert "| layers | 2 | 4 |" in card and "| attention heads | 2 | 2 |" in card
    assert "Domains (K=3): books, dvd, kitchen" in card and "Labels (C=2): negative, positive" in card
    assert "`[d*2, (d+1)*2)`" in card
    assert "| kitchen | 0.6250 | 0.6875 |" in card and "| average | 0.6250 | 0.6458 |" in card
    assert "| parameters | 250 | 1,000 | 25.0% |" in card
    assert "| size on disk | 1.00 MiB | 4.00 MiB | 25.0% |" in card and "| latency (ms) | 1.50 | 6.00 | 25.0% |" in card
    assert 'model_dir = "."' in card and str(model_dir) not in card  # the directory itself, not where it was written
    assert "hrkd-predict . data.csv" in card
    assert "python hrkd_ds/train.py output_dir=RUN" in card
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["metrics"] == ["accuracy"] and "base_model" not in meta  # none given: no guess
    scores = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert scores["test accuracy (mean over domains)"] == 0.6458 and scores["dev accuracy (kitchen)"] == 0.625
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == []  # atomic: no temp left


def test_card_names_no_local_path(export, tmp_path):
    """The command's run directory becomes RUN, project files keep their project path, other
    local paths become placeholders; the Hub metadata takes base model and dataset as given."""
    model_dir, _ = export
    run = tmp_path / "runs" / "mine"
    command = (f"python /home/someone/hrkd-ds/hrkd_ds/train.py --deepspeed /home/someone/hrkd-ds/ds_configs/zero2.json "
               f"output_dir={run} data.cache_dir=/scratch/cache teacher_from={run}/teacher student.dropout=0.1")
    info = {"command": command, "run_dir": str(run), "base_model": "org/base-model", "dataset": "amazon (shipped sample)",
            "base": "a pretrained model (minilm)", "results": RESULTS}
    text = write_model_card(model_dir, info).read_text()
    meta, card = _split(text)
    assert ("python hrkd_ds/train.py --deepspeed ds_configs/zero2.json output_dir=RUN "
            "data.cache_dir=LOCAL_PATH teacher_from=RUN/teacher student.dropout=0.1") in card
    assert not re.search(r"(?<![\w.<])/(home|scratch|tmp)\b", text), text
    assert str(tmp_path) not in text
    assert meta["base_model"] == "org/base-model" and meta["datasets"] == ["amazon (shipped sample)"]


def test_int8_card_and_section(export, tmp_path):
    """An int8 export's card says so and loads it through hrkd-ds; the fp32 card shows it beside itself."""
    model_dir, _ = export
    int8_dir = tmp_path / "model-int8"
    shutil.copytree(model_dir, int8_dir)
    (int8_dir / "hrkd.json").write_text(json.dumps({"role": "student", "precision": "int8"}))
    meta, card = _split(write_model_card(int8_dir, {"results": {"test": RESULTS["test"]}}).read_text())
    assert card.startswith("# hrkd-ds student (int8):") and "## Accuracy (measured on the int8 model)" in card
    assert 'load_export(".")' in card and "from_pretrained" not in card
    assert "int8" in meta["tags"] and meta["library_name"] == "pytorch"
    section = {"path": "../model-int8", "size_bytes": 2**19, "latency_ms": {"1": 0.5, "32": 4.0}, "test": {"average": 0.625},
               "fp32": {"size_bytes": 2**20, "latency_ms": {"1": 1.0, "32": 10.0}, "test": {"average": 0.6458}}}
    _, fp32 = _split(write_model_card(model_dir, {"int8": section}).read_text())
    assert "## int8 variant" in fp32 and "`../model-int8`" in fp32
    assert "| latency batch 32 (ms) | 10.00 | 4.00 |" in fp32 and "| test accuracy (average) | 0.6458 | 0.6250 |" in fp32


def test_card_without_optional_facts(export):
    model_dir, _ = export
    _, card = _split(write_model_card(model_dir, {}).read_text())
    assert card.startswith("# hrkd-ds student:")  # role from hrkd.json
    assert "## Accuracy" not in card and "## Size and speed" not in card and "## How it was made" not in card
    assert "| layers | 2 |" in card and "max_length=128" in card


def test_code_example_runs_and_slices_the_right_logits(export, monkeypatch, capsys):
    model_dir, model = export
    card = write_model_card(model_dir, {"max_seq_len": 16}).read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    monkeypatch.chdir(model_dir)  # the example loads "." : run from inside the directory
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
