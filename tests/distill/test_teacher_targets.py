"""Offline teacher targets (distill/teacher_targets.py): the cached logits equal the online teacher's
on the shipped sample; a logit-only step from the cache equals the online step; the key follows the
teacher's weights, the (augmented) rows and max_seq_len; a damaged or mis-sized file is rebuilt."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hrkd_ds.config import DataConfig, DistillConfig, GraphConfig, ModelConfig, TermConfig, TokenizerConfig
from hrkd_ds.data import build_tokenizer, load_splits
from hrkd_ds.data.collate import collate_episode
from hrkd_ds.data.multidomain import tokenize_splits
from hrkd_ds.distill.methods import METHODS, build_step_module, term_weights
from hrkd_ds.distill.step import model_inputs
from hrkd_ds.distill.teacher_targets import cacheable, label_rows, load_or_build, split_columns, targets_key, teacher_fingerprint
from hrkd_ds.models.build import build_model

T = 32


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tt_cache")
    raw = load_splits(DataConfig(train_fraction=0.2))
    tok = build_tokenizer(TokenizerConfig(vocab_size=400), raw, str(cache))
    data = tokenize_splits(raw, tok, T, str(cache))
    return data, tok


def _model(data, tok, seed, hidden=32, layers=2):
    torch.manual_seed(seed)
    m = build_model(ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=2, intermediate_size=64, dropout=0.0),
                    len(data.domains), len(data.labels), len(tok), tok.pad_token_id, T, attention="probs",
                    domains=data.domains, labels=data.labels)
    return m.eval()


@pytest.fixture(scope="module")
def teacher(sample):
    return _model(*sample, seed=0)


def _train(data):
    return [data.splits["train"][d] for d in data.domains]


def _forward(model):
    return lambda inputs: model(**inputs).logits


def test_cached_logits_equal_online_teacher_logits(sample, teacher):
    data, tok = sample
    train = _train(data)
    cached = label_rows(_forward(teacher), train, tok.pad_token_id, 0, 1, torch.device("cpu"), batch=16)
    assert [len(c) for c in cached] == data.train_sizes and cached[0].dtype == np.float32
    episode = [[3, 0, 7, 19], [1, 2, 50, 11], [0, 9, 8, 4], [60, 61, 5, 6]]
    batch = collate_episode(train, episode, tok.pad_token_id, targets=cached)
    with torch.no_grad():
        online = teacher(**model_inputs(batch)).logits
    assert torch.allclose(batch["teacher_logits"], online, atol=1e-5, rtol=1e-5)
    # padded to max_length as pad_to=max_length runs do: the same logits
    padded = label_rows(_forward(teacher), [t.select(range(10)) for t in train], tok.pad_token_id, 0, 1,
                        torch.device("cpu"), pad_length=T, batch=4)
    assert np.allclose(padded[2], cached[2][:10], atol=1e-5)


def test_logit_only_step_from_the_cache_equals_the_online_step(sample, teacher):
    data, tok = sample
    train = _train(data)
    cached = label_rows(_forward(teacher), train, tok.pad_token_id, 0, 1, torch.device("cpu"))
    dcfg = DistillConfig(method="logit-kd", temperature=2.0)
    spec = METHODS["logit-kd"]
    assert cacheable(term_weights(spec, dcfg))
    assert not cacheable(term_weights(METHODS["kd"], DistillConfig(method="kd")))
    assert cacheable(term_weights(METHODS["kd"], DistillConfig(method="kd", terms={k: TermConfig(0.0) for k in ("emb", "att", "hid")})))
    student = _model(data, tok, seed=1, hidden=16, layers=1)
    online_teacher = copy.deepcopy(teacher)
    module = build_step_module("logit-kd", student, online_teacher, len(data.domains), GraphConfig(), dcfg)
    episode = [[3, 0], [1, 2], [0, 9], [60, 61]]
    batch = collate_episode(train, episode, tok.pad_token_id)
    with_targets = collate_episode(train, episode, tok.pad_token_id, targets=cached)
    online = module(batch, teacher=online_teacher)
    offline = module(with_targets, teacher=None)
    assert torch.allclose(online.loss, offline.loss, rtol=1e-5, atol=1e-6)
    for key in ("kl", "ce"):
        assert torch.allclose(online.logs[key], offline.logs[key], rtol=1e-5, atol=1e-6)


def test_pooled_term_step_from_the_cache_equals_the_online_step(sample, teacher):
    """logit-kd + the pooled term: the cache's rows are the logits, then the teacher's last-layer
    position-0 state; the step from them equals the online step, and no teacher runs."""
    data, tok = sample
    train = _train(data)
    dcfg = DistillConfig(method="logit-kd", temperature=2.0, terms={"pool": TermConfig(1.0)})
    assert cacheable(term_weights(METHODS["logit-kd"], dcfg))
    labeller = copy.deepcopy(teacher)
    labeller.select_internals([labeller.num_layers], ())

    def forward(inputs):
        out = labeller(**inputs, output_internals=True)
        return torch.cat([out.logits, out.hidden_states[-1][:, 0]], dim=-1)

    rows = label_rows(forward, train, tok.pad_token_id, 0, 1, torch.device("cpu"))
    C = len(data.labels)
    logits, pooled = split_columns(rows, C, pooled=True)
    assert rows[0].shape[1] == C + teacher.hidden_size and pooled[0].shape[1] == teacher.hidden_size
    student = _model(data, tok, seed=1, hidden=16, layers=1)
    online_teacher = copy.deepcopy(teacher)
    module = build_step_module("logit-kd", student, online_teacher, len(data.domains), GraphConfig(), dcfg)
    episode = [[3, 0], [1, 2], [0, 9], [60, 61]]
    online = module(collate_episode(train, episode, tok.pad_token_id), teacher=online_teacher)
    with_targets = collate_episode(train, episode, tok.pad_token_id, targets=logits, pooled=pooled)
    assert with_targets["teacher_pooled"].shape == (8, teacher.hidden_size)
    offline = module(with_targets, teacher=None)
    assert torch.allclose(online.loss, offline.loss, rtol=1e-5, atol=1e-6)
    for key in ("kl", "ce", "pool"):
        assert torch.allclose(online.logs[key], offline.logs[key], rtol=1e-5, atol=1e-6), key
    assert offline.logs["pool"].abs().sum() > 0


def test_key_follows_teacher_weights_rows_and_length(sample, teacher, tmp_path):
    data, tok = sample
    train = _train(data)
    a, b = tmp_path / "a", tmp_path / "b"
    teacher.save_pretrained(a)
    teacher.save_pretrained(b)
    assert teacher_fingerprint(a) == teacher_fingerprint(b)
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-4
    changed.save_pretrained(tmp_path / "c")
    fp = teacher_fingerprint(a)
    assert teacher_fingerprint(tmp_path / "c") != fp
    key = targets_key(fp, train, T, "longest", "fp32")
    assert targets_key(teacher_fingerprint(b), train, T, "longest", "fp32") == key
    assert targets_key(teacher_fingerprint(tmp_path / "c"), train, T, "longest", "fp32") != key
    fewer = [train[0].select(range(len(train[0]) - 1)), *train[1:]]  # e.g. another augmentation setting
    assert targets_key(fp, fewer, T, "longest", "fp32") != key
    assert targets_key(fp, train, 64, "longest", "fp32") != key
    assert targets_key(fp, train, T, "max_length", "fp32") != key
    assert targets_key(fp, train, T, "longest", "bf16") != key
    assert targets_key(fp, train, T, "longest", "fp32", pooled=True) != key  # logits + pooled states: another file


def test_damaged_or_mis_sized_cache_is_rebuilt_never_used(sample, teacher, tmp_path, capsys):
    data, tok = sample
    train = [t.select(range(12)) for t in _train(data)]
    calls = []

    def build():
        calls.append(1)
        return label_rows(_forward(teacher), train, tok.pad_token_id, 0, 1, torch.device("cpu"))

    final = tmp_path / "targets" / "k"
    agree, barrier = (lambda flag: flag), (lambda: None)
    first, built = load_or_build(final, train, build, 0, agree, barrier)
    assert built and len(calls) == 1 and isinstance(first[0], np.memmap)
    again, built = load_or_build(final, train, build, 0, agree, barrier)
    assert not built and len(calls) == 1 and all(np.array_equal(x, y) for x, y in zip(first, again))
    want = [np.array(x) for x in first]
    f = final / "domain2.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x01  # one bit of one logit
    f.write_bytes(bytes(raw))
    capsys.readouterr()
    rebuilt, built = load_or_build(final, train, build, 0, agree, barrier)
    assert built and len(calls) == 2 and "damaged, rebuilding" in capsys.readouterr().out
    assert all(np.array_equal(x, y) for x, y in zip(rebuilt, want))
    f.write_bytes(f.read_bytes()[:-8])  # truncated
    _, built = load_or_build(final, train, build, 0, agree, barrier)
    assert built and len(calls) == 3
    more = [t.select(range(13)) for t in _train(data)]  # rows the file does not cover: a miss
    _, built = load_or_build(final, more, lambda: label_rows(_forward(teacher), more, tok.pad_token_id, 0, 1,
                                                                   torch.device("cpu")), 0, agree, barrier)
    assert built
