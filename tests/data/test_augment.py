"""The transfer set (data/augment.py): deterministic per (seed, settings), specials kept, cached under
a key of its inputs (a changed teacher embedding table or setting misses), a damaged cache file
detected and rebuilt; the labels' term ignores the augmented rows; bad settings name their field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrkd_ds.config import load_config
from hrkd_ds.config.schema import TransferConfig
from hrkd_ds.data.augment import IGNORE, build_arrays, nearest_neighbours, transfer_key, with_transfer_set
from hrkd_ds.data.multidomain import tokenize_splits
from hrkd_ds.distill.loss_terms import labels as labels_term
from hrkd_ds.errors import UserError


@pytest.fixture(scope="module")
def tokenized(sample_raw, sample_tokenizer, tok_cache):
    return tokenize_splits(sample_raw, sample_tokenizer, 32, str(tok_cache))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, sample_tokenizer):
    """An exported-teacher stand-in: only its word-embedding table is read."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("teacher")
    table = torch.from_numpy(np.random.default_rng(0).normal(size=(len(sample_tokenizer), 16)).astype(np.float32))
    save_file({"bert.embeddings.word_embeddings.weight": table}, str(d / "model.safetensors"))
    return d


def _train(tokenized, n=40):
    return [tokenized.splits["train"][d].select(range(n)) for d in tokenized.domains]


def _specials(tok):
    return set(tok.all_special_ids), tok.mask_token_id


@pytest.fixture(scope="module")
def inputs(tokenized, sample_tokenizer, teacher_dir):
    """What build_arrays reads: the teacher's embedding table, 40 training rows per domain, the special ids."""
    from hrkd_ds.data.augment import teacher_input_embeddings

    return (teacher_input_embeddings(teacher_dir), _train(tokenized), *_specials(sample_tokenizer))


def test_same_seed_same_set_other_seed_different(inputs):
    table, train, specials, mask = inputs
    cfg = TransferConfig(augment_factor=3)
    a = build_arrays(train, table, cfg, specials, mask)
    b = build_arrays(train, table, cfg, specials, mask)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    c = build_arrays(train, table, dataclasses.replace(cfg, seed=1), specials, mask)
    assert not all(np.array_equal(a[k], c[k]) for k in a if k.startswith("ids"))
    # factor 2's copies are the first two of each row's three
    two = build_arrays(train, table, dataclasses.replace(cfg, augment_factor=2), specials, mask)
    off3, off2 = a["offsets0"], two["offsets0"]
    for i in range(len(train[0])):
        for copy in range(2):
            r3, r2 = 3 * i + copy, 2 * i + copy
            assert np.array_equal(a["ids0"][off3[r3]:off3[r3 + 1]], two["ids0"][off2[r2]:off2[r2 + 1]])


def test_copies_keep_the_special_tokens_and_change_some_words(inputs, sample_tokenizer):
    table, train, specials, mask = inputs
    arrays = build_arrays(train, table, TransferConfig(augment_factor=2), specials, mask)
    ids, off = arrays["ids0"], arrays["offsets0"]
    changed = 0
    for r in range(len(off) - 1):
        row = ids[off[r]:off[r + 1]].tolist()
        src = train[0][r // 2]["input_ids"]
        assert row[0] == src[0] == sample_tokenizer.cls_token_id and row[-1] == src[-1] == sample_tokenizer.sep_token_id
        assert len(row) <= len(src)
        changed += row != src
    assert changed > 0.8 * (len(off) - 1)
    off_types = arrays["types0"]
    assert len(off_types) == len(ids)


def test_nearest_neighbours_are_by_cosine_and_never_self_or_special():
    table = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [0.1, 0.9], [5, 0.1]], dtype=np.float32)
    nbrs = nearest_neighbours(table, np.array([1, 2]), k=2, exclude={0})
    assert nbrs[0].tolist() == [5, 4]  # token 0 (the most similar) is a special token: never drawn
    assert nbrs[1].tolist() == [4, 1]


def test_cache_key_follows_teacher_table_and_settings(inputs):
    table, train, specials, mask = inputs
    cfg = TransferConfig(augment_factor=2)
    key = transfer_key(train, table, cfg, specials, mask)
    assert key == transfer_key(train, table.copy(), cfg, specials, mask)
    other_table = table.copy()
    other_table[7, 0] += 1e-3
    assert transfer_key(train, other_table, cfg, specials, mask) != key
    for change in ({"replace_prob": 0.3}, {"seed": 1}, {"augment_factor": 3}, {"neighbours": 5}, {"max_span": 2}):
        assert transfer_key(train, table, dataclasses.replace(cfg, **change), specials, mask) != key, change


def test_transfer_set_cached_damage_detected_and_rebuilt(tokenized, sample_tokenizer, teacher_dir, tmp_path, capsys):
    specials, mask = _specials(sample_tokenizer)
    cfg = TransferConfig(augment_factor=2)
    data = with_transfer_set(tokenized, teacher_dir, cfg, specials, mask, str(tmp_path), log=True)
    assert "[hrkd] transfer set built: " in capsys.readouterr().out
    n = tokenized.train_sizes
    assert data.train_sizes == [3 * x for x in n]
    assert tokenized.train_sizes == n  # the input is not modified
    d0 = data.splits["train"][data.domains[0]]
    assert d0["label"][:n[0]] == tokenized.splits["train"][data.domains[0]]["label"]
    assert set(d0["label"][n[0]:]) == {IGNORE}
    for split in ("dev", "test"):
        assert data.splits[split] is tokenized.splits[split] or data.splits[split] == tokenized.splits[split]
    entries = list((tmp_path / "transfer").iterdir())
    assert len(entries) == 1
    again = with_transfer_set(tokenized, teacher_dir, cfg, specials, mask, str(tmp_path), log=True)
    assert f"[hrkd] transfer set read from the cache: {2 * sum(n)} augmented rows (2 per training row)" in capsys.readouterr().out
    assert again.splits["train"][data.domains[1]]["input_ids"] == data.splits["train"][data.domains[1]]["input_ids"]
    # damage one file: detected, rebuilt, same rows
    f = entries[0] / "ids1.npy"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF
    f.write_bytes(bytes(raw))
    capsys.readouterr()
    rebuilt = with_transfer_set(tokenized, teacher_dir, cfg, specials, mask, str(tmp_path))
    assert "damaged, rebuilding" in capsys.readouterr().out
    assert rebuilt.splits["train"][data.domains[1]]["input_ids"] == data.splits["train"][data.domains[1]]["input_ids"]
    assert with_transfer_set(tokenized, teacher_dir, TransferConfig(), specials, mask, str(tmp_path)) is tokenized


def test_labels_term_ignores_augmented_rows_and_keeps_the_default_bitwise():
    gen = torch.Generator().manual_seed(0)
    K, B, C = 3, 4, 5
    logits = torch.randn(K * B, C, generator=gen)
    labels = torch.randint(0, C, (K * B,), generator=gen)
    old = F.cross_entropy(logits.float(), labels, reduction="none").view(K, -1).mean(dim=1)  # the formula before
    assert torch.equal(labels_term.per_domain_ce(logits, labels, K), old)
    masked = labels.clone()
    masked[[1, 2, 5]] = IGNORE  # domain 0 keeps rows 0, 3; domain 1 keeps 4, 6, 7
    masked[8:12] = IGNORE  # domain 2: no labelled row at all
    got = labels_term.per_domain_ce(logits, masked, K)
    want = [F.cross_entropy(logits[[0, 3]], labels[[0, 3]]), F.cross_entropy(logits[[4, 6, 7]], labels[[4, 6, 7]])]
    assert torch.allclose(got[:2], torch.stack(want), rtol=1e-6)
    assert got[2].item() == 0.0 and torch.isfinite(got).all()
    rows = type("Rows", (), {"student_logits": logits[8:12], "labels": masked[8:12]})
    assert labels_term.reference(rows).item() == 0.0
    rows.student_logits, rows.labels = logits[0:4], masked[0:4]
    assert torch.allclose(labels_term.reference(rows), want[0])


@pytest.mark.parametrize("override, field", [
    ("transfer.augment_factor=-1", "transfer.augment_factor"),
    ("transfer.replace_prob=1.5", "transfer.replace_prob"),
    ("transfer.mask_prob=-0.1", "transfer.mask_prob"),
    ("transfer.neighbours=0", "transfer.neighbours"),
    ("transfer.max_span=0", "transfer.max_span"),
    ("transfer.teacher_targets=offline", "transfer.teacher_targets"),
])  # fmt: skip
def test_bad_transfer_settings_name_the_field(override, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)
