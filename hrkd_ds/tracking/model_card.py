"""README.md for an exported model directory: what it is, how good it is, how to use it.

The exported directory is what people copy around; a card inside it keeps the facts (domains,
logit layout, accuracy, the command) with the weights. Everything comes from `info` and the
directory's own config.json / hrkd.json, so the card can be written before the export's
atomic swap and tested on any directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hrkd_ds.io import atomic_write_text

_SHAPE = (("layers", "num_hidden_layers", "layers"), ("hidden size", "hidden_size", "hidden"),
          ("attention heads", "num_attention_heads", "heads"), ("intermediate size", "intermediate_size", "intermediate"))
_FIGURES = (("parameters", "params"), ("size on disk", "size_bytes"), ("latency (ms)", "latency_ms"))


def _fmt(key: str, value: float) -> str:
    if key == "size_bytes":
        return f"{value / 2**20:.2f} MiB"
    if key == "params":
        return f"{int(value):,}"
    return f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _shape_section(config: dict[str, Any], teacher: dict[str, Any] | None) -> list[str]:
    header = ["", "this model"] + (["teacher"] if teacher else [])
    rows = [[name, str(config.get(key, ""))] + ([str(teacher.get(short, ""))] if teacher else []) for name, key, short in _SHAPE]
    return _table(header, rows)


def _accuracy_section(results: dict[str, dict[str, float]], domains: list[str]) -> list[str]:
    splits = [s for s in ("dev", "test") if s in results]
    rows = [[name] + [f"{results[s][name]:.4f}" if name in results[s] else "" for s in splits] for name in [*domains, "average"]]
    return _table(["domain", *splits], rows)


def _compression_section(compression: dict[str, tuple[float, float]]) -> list[str]:
    rows = [[name, _fmt(key, ours), _fmt(key, theirs), f"{100 * ours / theirs:.1f}%"]
            for name, key in _FIGURES if key in compression for ours, theirs in [compression[key]]]
    return _table(["", "this model", "teacher", "% of teacher"], rows)


def _usage_section(path: str, domains: list[str], labels: list[str], max_seq_len: int) -> list[str]:
    return [
        "```python",
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        f"model_dir = {path!r}",
        "model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()",
        "tokenizer = AutoTokenizer.from_pretrained(model_dir)",
        "domains, labels = model.config.hrkd_domains, model.config.hrkd_labels",
        "",
        f'batch = tokenizer(["An example text."], truncation=True, max_length={max_seq_len}, padding=True, return_tensors="pt")',
        "with torch.no_grad():",
        "    logits = model(**batch).logits.view(-1, len(domains), len(labels))  # (N, K domains, C labels)",
        f"d = domains.index({domains[-1]!r})  # each text is classified by its own domain's slice",
        "probs = logits[:, d].softmax(-1)",
        "print([labels[i] for i in probs.argmax(-1)], probs.max(-1).values)",
        "```",
        "",
        "A whole CSV/TSV/JSONL/Parquet file with `text` and `domain` columns:",
        "",
        "```bash",
        f"hrkd-predict {path} data.csv --output predictions.csv",
        "```",
    ]


def render_model_card(model_dir: str | Path, info: dict[str, Any]) -> str:
    """The card's Markdown; see `write_model_card` for `info`."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    meta_file = model_dir / "hrkd.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    domains = list(info.get("domains") or config["hrkd_domains"])
    labels = list(info.get("labels") or config["hrkd_labels"])
    role = info.get("role") or meta.get("role", "model")
    K, C = len(domains), len(labels)
    arch = (config.get("architectures") or [config.get("model_type", "")])[0]
    method = info.get("method")
    lines = [
        f"# hrkd-ds {role}: {arch}, {K} domains x {C} labels",
        "",
        f"The {role} of an hrkd-ds run" + (f" (method `{method}`)" if method else "") +
        f": one Hugging Face `{arch}` with {K * C} outputs that classifies text from {K} domains.",
        "",
        "## Model",
        "",
        *_shape_section(config, info.get("teacher")),
        "",
    ]
    if info.get("base"):
        lines += [f"- Initialised from: {info['base']}"]
    lines += [
        f"- Domains (K={K}): {', '.join(domains)}",
        f"- Labels (C={C}): {', '.join(labels)}",
        f"- Logits are domain-major: domain `d` owns logits `[d*{C}, (d+1)*{C})`; `config.id2label` names them "
        "`domain:label`, `config.hrkd_domains` / `config.hrkd_labels` give the order.",
    ]
    if info.get("max_seq_len"):
        lines += [f"- Trained on sequences of at most {info['max_seq_len']} tokens."]
    if info.get("results"):
        lines += ["", "## Accuracy", "", *_accuracy_section(info["results"], domains)]
    if info.get("compression"):
        lines += ["", "## Size and speed", "", *_compression_section(info["compression"])]
    path = str(info.get("model_path") or model_dir)
    lines += ["", "## Use it", "", *_usage_section(path, domains, labels, int(info.get("max_seq_len") or 128))]
    if info.get("command"):
        lines += ["", "## How it was made", "", "```bash", info["command"], "```"]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write `<model_dir>/README.md` atomically and return its path.

    `info` (every key optional):
      role         "teacher" | "student" (default: hrkd.json's role)
      method       e.g. "hrkd", "kd", "none" (distill.method), or "supervised" for the teacher
      base         where the encoder started, e.g. "random init", "pretrained /models/minilm",
                   "teacher layers [2, 4, 6]"
      teacher      the teacher's shape for a student: {"layers", "hidden", "heads", "intermediate"}
      results      a results.json block: {"dev": {domain: acc, ..., "average": acc}, "test": {...}}
      compression  {"params" | "size_bytes" | "latency_ms": (this model, teacher)}; from the compression report (analysis/compression.py)
      max_seq_len  data.max_seq_len (the example truncates to it; default 128)
      model_path   the path people load it from, when `model_dir` is a temp dir about to be renamed
      command      the command line that produced it
      domains, labels  override config.json's hrkd_domains / hrkd_labels
    """
    path = Path(model_dir) / "README.md"
    atomic_write_text(path, render_model_card(model_dir, info))
    return path
