"""Single-process runs: the exported HF model round trip, stage selection, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from integration_helpers import (
    LAUNCH_TIMEOUT, REPO, assert_accuracies, assert_ok, child_env, losses_by_step, read_metrics, read_results, run,
    single_cmd, train_args,
)

DOMAINS = ["books", "dvd", "electronics", "kitchen"]


# ---- 6. export round trip ---------------------------------------------------------------------
def test_exported_student_reproduces_trainer_predictions_and_dev_accuracy(single_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hrkd_ds.config import load_config
    from hrkd_ds.data.multidomain import tokenize_splits
    from hrkd_ds.data.splits import load_splits
    from hrkd_ds.data.tokenizer import build_tokenizer
    from hrkd_ds.engine.evaluate import eval_batch
    from hrkd_ds.models.loading import load_exported

    out = single_run
    model_dir = out / "student" / "model"
    hf = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    domains, labels = list(hf.config.hrkd_domains), list(hf.config.hrkd_labels)
    assert domains == DOMAINS and hf.config.num_labels == len(domains) * len(labels)
    C = len(labels)

    # the trainer's own path: its config, its tokenized dev data, its MultiDomainClassifier
    cfg = load_config(str(out / "config.yaml"))
    raw = load_splits(cfg.data)
    trainer_tok = build_tokenizer(cfg.tokenizer, raw, cfg.data.cache_dir)
    data = tokenize_splits(raw, trainer_tok, cfg.data.max_seq_len, cfg.data.cache_dir)
    ours = load_exported(model_dir, cfg.distill.attention).eval()

    results = read_results(out)["student"]
    for k, d in enumerate(domains):
        texts = list(raw.splits["dev"][d]["text"])
        gold = torch.tensor(list(raw.splits["dev"][d]["label"]))
        enc = tok(texts, truncation=True, max_length=cfg.data.max_seq_len, padding=True, return_tensors="pt")
        rows = [data.splits["dev"][d][i] for i in range(len(texts))]
        for i in range(3):  # the loaded tokenizer reproduces the trainer's token ids
            n = int(enc["attention_mask"][i].sum())
            assert enc["input_ids"][i, :n].tolist() == rows[i]["input_ids"]
        with torch.no_grad():
            plain = hf(**enc).logits[:, k * C:(k + 1) * C]
            batch = eval_batch(data.splits["dev"][d], list(range(len(texts))), trainer_tok.pad_token_id, k, torch.device("cpu"))
            mine = ours(**{n: batch[n] for n in ("input_ids", "attention_mask", "token_type_ids", "domain_ids")}).logits
        assert torch.allclose(plain, mine, atol=1e-5), (d, (plain - mine).abs().max())
        assert torch.equal(plain.argmax(-1), mine.argmax(-1))
        acc = float((plain.argmax(-1) == gold).double().mean())
        assert acc == pytest.approx(results["dev"][d], abs=1e-12), (d, acc, results["dev"][d])


# ---- 7. stages ------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["run_dir", "model_dir"])
def test_teacher_from_reuses_a_finished_teacher(single_run, it_root, it_cache, source):
    src = single_run if source == "run_dir" else single_run / "teacher" / "model"
    out = it_root / f"from_teacher_{source}"
    res = run(single_cmd() + train_args(out, it_cache, f"teacher_from={src}", "stages=[distill]"), it_root / f"{out.name}.log")
    assert_ok(res, "distill from teacher_from")
    assert not (out / "teacher").exists(), "the teacher stage ran again"
    assert not [r for r in read_metrics(out) if r["stage"] == "teacher"]
    results = read_results(out)
    assert_accuracies(results["student"], DOMAINS)
    assert sorted(losses_by_step(out, "student")) == list(range(1, 7))
    # the teacher is evaluated, not retrained: the same accuracy its exporting run recorded
    assert results["teacher"]["dev"] == pytest.approx(read_results(single_run)["teacher"]["dev"], abs=1e-12)
    assert (out / "student" / "model" / "config.json").is_file()


def test_method_none_needs_no_teacher(it_root, it_cache):
    out = it_root / "method_none"
    res = run(single_cmd() + train_args(out, it_cache, "distill.method=none", "stages=[distill]"), it_root / "method_none.log")
    assert_ok(res, "distill.method=none")
    results = read_results(out)
    assert "teacher" not in results and results["student"]["method"] == "none"
    assert_accuracies(results["student"], DOMAINS)
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert {r["stage"] for r in rows} == {"student"} and sorted(r["step"] for r in rows) == list(range(1, 7))
    assert set(rows[0]["terms"]) == {"ce"}


def test_eval_stage_re_evaluates_exported_models(single_run, it_root, it_cache):
    out = it_root / "eval_only"
    shutil.copytree(single_run, out, ignore=shutil.ignore_patterns("checkpoints", "best_by_domain"))
    before = read_results(out)
    res = run(single_cmd() + train_args(out, it_cache, "stages=[eval]"), it_root / "eval_only.log")
    assert_ok(res, "stages=[eval]")
    after = read_results(out)
    for role in ("teacher", "student"):
        assert_accuracies(after[role]["eval"], DOMAINS)
        # results[role]["dev"/"test"] describe the exported (best-dev) model: re-evaluation agrees
        for split in ("dev", "test"):
            assert after[role]["eval"][split] == pytest.approx(before[role][split], abs=1e-12), (role, split)
        assert after[role]["dev"] == before[role]["dev"]


# ---- 8. bad input ---------------------------------------------------------------------------
def _run_capture(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(single_cmd() + args, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hrkd_ds: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize("micro, distill_bpd", [(3, 2), (8, 3)], ids=["micro3", "distill_only"])
def test_yaml_batch_contradicting_deepspeed_json_exits_2(tmp_path, it_cache, micro, distill_bpd):
    """micro3: no stage fits. distill_only: the teacher stage fits (2 x 4 domains = 8) but distill does
    not; the error must come before the teacher trains, not after it."""
    ds = tmp_path / f"micro{micro}.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": micro, "gradient_clipping": 1.0, "zero_optimization": {"stage": 2}}))
    yaml_cfg = tmp_path / "exp.yaml"
    yaml_cfg.write_text(f"teacher_train:\n  batch_per_domain: 2\ndistill_train:\n  batch_per_domain: {distill_bpd}\n")
    out = tmp_path / "run"
    args = [a for a in train_args(out, it_cache, deepspeed=str(ds)) if "batch_per_domain" not in a]  # the YAML decides
    proc = _run_capture(["--config", str(yaml_cfg)] + args)
    _one_line_error(proc, f"train_micro_batch_size_per_gpu={micro}", ds.name)
    assert not (out / "teacher").exists() and not read_metrics(out)


def test_teacher_from_empty_dir_exits_2(tmp_path, it_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run_capture(train_args(tmp_path / "run", it_cache, f"teacher_from={empty}", "stages=[distill]"))
    _one_line_error(proc, "teacher_from", str(empty))


def test_relaunch_with_changed_settings_is_refused(tmp_path):
    """Resuming into an output_dir with a different experiment is one line, exit 2, files untouched."""
    from hrkd_ds.config import Config, save_config

    out = tmp_path / "run"
    save_config(Config(seed=1, output_dir=str(out)), out / "config.yaml")
    before = (out / "config.yaml").read_text()
    proc = subprocess.run([sys.executable, "hrkd_ds/train.py", f"output_dir={out}", "seed=2", "tracking.wandb_mode=disabled"],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hrkd_ds: error:")]
    assert len(lines) == 1 and "seed=1" in lines[0] and "Traceback" not in proc.stderr
    assert (out / "config.yaml").read_text() == before


def test_teacher_from_an_unfinished_run_is_refused(tmp_path):
    run_dir = tmp_path / "half"
    (run_dir / "teacher" / "model").mkdir(parents=True)
    (run_dir / "teacher" / "model" / "config.json").write_text("{}")
    proc = subprocess.run([sys.executable, "hrkd_ds/train.py", f"output_dir={tmp_path}/out", f"teacher_from={run_dir}",
                           "stages=[distill]", "tracking.wandb_mode=disabled"],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "has not finished" in proc.stderr and "Traceback" not in proc.stderr
