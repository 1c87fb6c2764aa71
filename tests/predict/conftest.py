"""A tiny hrkd export (random BERT, SentencePiece tokenizer, hrkd.json) for the serving unit tests."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from hrkd_ds.data.tokenizer import sentencepiece_to_hf, train_sentencepiece
from hrkd_ds.models.encoder import annotate_config

DOMAINS, LABELS = ["books", "dvd", "kitchen"], ["negative", "positive"]
LINES = ["a good book", "a bad dvd", "kitchen knives are sharp", "terrible and boring", "lovely film"] * 20


def write_tiny_export(out, seed: int = 0, hidden: int = 32):
    tokenizer = sentencepiece_to_hf(train_sentencepiece(iter(LINES), 60, "unigram"), "unigram")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=24, pad_token_id=tokenizer.pad_token_id)
    annotate_config(config, DOMAINS, LABELS)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "hrkd.json").write_text(json.dumps({"domains": DOMAINS, "labels": LABELS, "role": "student", "max_seq_len": 24}))
    return out


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    return write_tiny_export(tmp_path_factory.mktemp("tiny") / "model")
