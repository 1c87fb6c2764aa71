"""Tokenized cache (reuse, atomic publish) and episode/eval collation."""

from __future__ import annotations

import pytest
import torch

from hrkd_ds.data import EpisodicDomainSampler, collate_episode, multidomain, tokenize_splits


def test_tokenize_and_cache_reuse(sample_raw, sample_tokenizer, tmp_path, monkeypatch):
    tok = tokenize_splits(sample_raw, sample_tokenizer, 64, str(tmp_path))
    assert tok.domains == sample_raw.domains and tok.labels == sample_raw.labels
    ds = tok.splits["train"]["books"]
    assert ds.column_names == ["input_ids", "attention_mask", "token_type_ids", "label"]
    assert max(map(len, ds["input_ids"])) == 64 and min(map(len, ds["input_ids"])) < 64, "truncated, not padded"
    assert list(ds["label"]) == list(sample_raw.splits["train"]["books"]["label"])
    entries = list((tmp_path / "tokenized").iterdir())
    assert len(entries) == 1 and (entries[0] / "COMPLETE").is_file()
    monkeypatch.setattr(multidomain, "_tokenize", lambda *a: (_ for _ in ()).throw(AssertionError("cache not reused")))
    again = tokenize_splits(sample_raw, sample_tokenizer, 64, str(tmp_path))
    assert again.cache_path == str(entries[0])
    assert list(again.splits["test"]["dvd"]["input_ids"]) == list(tok.splits["test"]["dvd"]["input_ids"])


def test_cache_key_changes_with_inputs(sample_raw, sample_tokenizer):
    key = multidomain.cache_key(sample_raw, sample_tokenizer, 64)
    assert key == multidomain.cache_key(sample_raw, sample_tokenizer, 64)
    assert key != multidomain.cache_key(sample_raw, sample_tokenizer, 128)


def test_atomic_publish_tolerates_race(sample_raw, sample_tokenizer, tmp_path):
    flat = multidomain._tokenize(sample_raw, sample_tokenizer, 16)
    final = tmp_path / "k"
    multidomain._save_atomic(flat, final)
    multidomain._save_atomic(flat, final)  # the loser of a race keeps the winner's complete copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_collate_episode(sample_raw, sample_tokenizer):
    tok = tokenize_splits(sample_raw, sample_tokenizer, 48, "")
    datasets_ = [tok.splits["train"][d] for d in tok.domains]
    sampler = EpisodicDomainSampler(tok.train_sizes, 3, rank=1, world_size=2, seed=0)
    episode = next(iter(sampler))
    batch = collate_episode(datasets_, episode, sample_tokenizer.pad_token_id)
    k, b = len(datasets_), 3
    lengths = [len(datasets_[i][j]["input_ids"]) for i, idx in enumerate(episode) for j in idx]
    assert batch["input_ids"].shape == (k * b, max(lengths)) == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["domain_ids"].tolist() == [d for d in range(k) for _ in range(b)]
    assert batch["labels"].tolist() == [datasets_[i][j]["label"] for i, idx in enumerate(episode) for j in idx]
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == 0).all() and (batch["token_type_ids"][pad] == 0).all()
    assert batch["input_ids"].dtype == torch.long



def test_collate_episode_pads_to_max_length(sample_raw, sample_tokenizer):
    """pad_to=max_length (the reference's padding): same real tokens, every row max_seq_len long."""
    tok = tokenize_splits(sample_raw, sample_tokenizer, 48, "")
    datasets_ = [tok.splits["train"][d] for d in tok.domains]
    episode = next(iter(EpisodicDomainSampler(tok.train_sizes, 3, rank=0, world_size=1, seed=0)))
    pad_id = sample_tokenizer.pad_token_id
    longest = collate_episode(datasets_, episode, pad_id)
    full = collate_episode(datasets_, episode, pad_id, pad_to="max_length", max_seq_len=48)
    T = longest["input_ids"].shape[1]
    assert full["input_ids"].shape == (longest["input_ids"].shape[0], 48)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(full[key][:, :T], longest[key]), key
    assert (full["attention_mask"][:, T:] == 0).all() and (full["input_ids"][:, T:] == pad_id).all()
    assert torch.equal(full["labels"], longest["labels"]) and torch.equal(full["domain_ids"], longest["domain_ids"])
    with pytest.raises(ValueError, match="longer than max_seq_len"):
        collate_episode(datasets_, episode, pad_id, pad_to="max_length", max_seq_len=T - 1)
