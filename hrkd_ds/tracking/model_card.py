"""README.md for an exported model directory: what it is, how good it is, how to use it.

The exported directory is what people copy around (and upload to the Hugging Face Hub); a card
inside it keeps the facts (domains, logit layout, accuracy, the command) with the weights. It
opens with the Hub's YAML metadata (library, pipeline tag, base model, datasets, the measured
accuracy) and names no local path: code and commands load "." (the directory itself), the
command that made it shows the run directory as RUN and other local paths as placeholders.
Everything comes from `info` and the directory's own config.json / hrkd.json, so the card can be
written before the export's atomic swap and tested on any directory.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

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


def _usage_section(domains: list[str], labels: list[str], max_seq_len: int, int8: bool) -> list[str]:
    """Code that loads "." (this directory): run it from inside the directory, or put its path there."""
    if int8:
        load = ["from hrkd_ds.models.loading import load_export  # int8 weights: pip install hrkd-ds",
                "",
                'export = load_export(".")  # this directory',
                "model, tokenizer = export.model.hf_model, export.tokenizer",
                "domains, labels = export.domains, export.labels"]
    else:
        load = ["from transformers import AutoModelForSequenceClassification, AutoTokenizer",
                "",
                'model_dir = "."  # this directory (or its Hub id once uploaded)',
                "model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()",
                "tokenizer = AutoTokenizer.from_pretrained(model_dir)",
                "domains, labels = model.config.hrkd_domains, model.config.hrkd_labels"]
    return [
        "```python",
        "import torch",
        *load,
        "",
        f'batch = tokenizer(["An example text."], truncation=True, max_length={max_seq_len}, padding=True, return_tensors="pt")',
        "with torch.no_grad():",
        "    logits = model(**batch).logits.view(-1, len(domains), len(labels))  # (N, K domains, C labels)",
        f"d = domains.index({domains[-1]!r})  # each text is classified by its own domain's slice",
        "probs = logits[:, d].softmax(-1)",
        "print([labels[i] for i in probs.argmax(-1)], probs.max(-1).values)",
        "```",
        "",
        "A whole CSV/TSV/JSONL/Parquet file with `text` and `domain` columns, from inside this directory:",
        "",
        "```bash",
        "hrkd-predict . data.csv --output predictions.csv" + ("" if int8 else "  # --precision int8: quantized in memory"),
        *([] if int8 else ["hrkd-export-onnx . model.onnx  # ONNX Runtime; checked against this model on dev examples"]),
        "```",
    ]


def _int8_section(int8: dict[str, Any]) -> list[str]:
    """This fp32 model beside its int8 export: size, CPU latency and the int8 model's own accuracy."""
    fp32 = int8["fp32"]
    rows = [["size on disk", _fmt("size_bytes", fp32["size_bytes"]), _fmt("size_bytes", int8["size_bytes"])]]
    rows += [[f"latency batch {b} (ms)", f"{fp32['latency_ms'][b]:.2f}", f"{ms:.2f}"] for b, ms in int8["latency_ms"].items()]
    if int8.get("test") and fp32.get("test"):
        rows.append(["test accuracy (average)", f"{fp32['test']['average']:.4f}", f"{int8['test']['average']:.4f}"])
    return [f"Dynamic int8 quantization of every linear layer, in `{int8.get('path', '../model-int8')}` "
            "(load it with hrkd-ds; accuracy measured on the quantized model):", "",
            *_table(["", "fp32 (this model)", "int8"], rows)]


def _portable(token: str, run_dir: str | None) -> str:
    """A command-line token without local absolute paths: the run directory becomes RUN, paths in
    the project keep their project-relative tail, any other local path becomes a placeholder."""
    key, sep, value = token.rpartition("=") if "=" in token and not token.startswith("/") else ("", "", token)
    if not value.startswith("/"):
        return token
    if run_dir and (value == run_dir or value.startswith(run_dir.rstrip("/") + "/")):
        value = "RUN" + value[len(run_dir.rstrip("/")):]
    else:
        parts = Path(value).parts
        tail = next((i for i, p in enumerate(parts) if p in ("hrkd_ds", "ds_configs", "configs")), None)
        value = str(Path(*parts[tail:])) if tail is not None else "LOCAL_PATH"
    return f"{key}{sep}{value}"


def portable_command(command: str, run_dir: str | Path | None) -> str:
    run = str(Path(run_dir).resolve()) if run_dir else None
    tokens = [_portable(t, run) for t in shlex.split(command)]
    if run_dir and str(run_dir) != run:  # the run directory as it was typed (relative) too
        tokens = ["RUN" + t[len(str(run_dir)):] if t.startswith(str(run_dir)) else t.replace(f"={run_dir}", "=RUN")
                  for t in tokens]
    return shlex.join(tokens)


def front_matter(info: dict[str, Any], domains: list[str], int8: bool) -> list[str]:
    """The Hub's YAML metadata block: what the model is, and the accuracy measured on its test split."""
    meta: dict[str, Any] = {"library_name": "pytorch" if int8 else "transformers", "pipeline_tag": "text-classification"}
    if info.get("base_model"):
        meta["base_model"] = info["base_model"]
    if info.get("dataset"):
        meta["datasets"] = [info["dataset"]]
    meta["metrics"] = ["accuracy"]
    meta["tags"] = ["hrkd-ds", "knowledge-distillation", "multi-domain"] + (["int8", "dynamic-quantization"] if int8 else [])
    results = info.get("results") or {}
    scores = [{"type": "accuracy", "value": round(float(results[split][name]), 4),
               "name": f"{split} accuracy ({'mean over domains' if name == 'average' else name})"}
              for split in ("test", "dev") if split in results for name in ["average", *domains] if name in results[split]]
    if scores:
        meta["model-index"] = [{"name": info.get("name") or f"hrkd-ds {info.get('role') or 'model'}",
                                "results": [{"task": {"type": "text-classification"},
                                             "dataset": {"name": info.get("dataset") or "the run's data", "type": "text"},
                                             "metrics": scores}]}]
    return ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]


def render_model_card(model_dir: str | Path, info: dict[str, Any]) -> str:
    """The card's Markdown; see `write_model_card` for `info`."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    meta_file = model_dir / "hrkd.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    domains = list(info.get("domains") or config["hrkd_domains"])
    labels = list(info.get("labels") or config["hrkd_labels"])
    role = info.get("role") or meta.get("role", "model")
    int8 = meta.get("precision") == "int8"
    K, C = len(domains), len(labels)
    arch = (config.get("architectures") or [config.get("model_type", "")])[0]
    method = info.get("method")
    kind = f"{role} (int8)" if int8 else role
    lines = [
        *front_matter({**info, "role": kind}, domains, int8),
        f"# hrkd-ds {kind}: {arch}, {K} domains x {C} labels",
        "",
        f"The {role} of an hrkd-ds run" + (f" (method `{method}`)" if method else "") +
        f": one Hugging Face `{arch}` with {K * C} outputs that classifies text from {K} domains" +
        (", its linear layers quantized to int8 (dynamic quantization: int8 weights, activations quantized per batch)." if int8 else "."),
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
        lines += ["", "## Accuracy" + (" (measured on the int8 model)" if int8 else ""), "",
                  *_accuracy_section(info["results"], domains)]
    if info.get("compression"):
        lines += ["", "## Size and speed", "", *_compression_section(info["compression"])]
    if info.get("int8"):
        lines += ["", "## int8 variant", "", *_int8_section(info["int8"])]
    lines += ["", "## Use it", "", *_usage_section(domains, labels, int(info.get("max_seq_len") or 128), int8)]
    if info.get("command"):
        lines += ["", "## How it was made", "", "```bash", portable_command(info["command"], info.get("run_dir")), "```"]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write `<model_dir>/README.md` atomically and return its path.

    `info` (every key optional):
      role         "teacher" | "student" (default: hrkd.json's role)
      method       e.g. "hrkd", "kd", "none" (distill.method), or "supervised" for the teacher
      base         where the encoder started, e.g. "random init", "a pretrained model (minilm)",
                   "teacher layers [2, 4, 6]"
      base_model   a Hub id for the front matter's base_model (only when known)
      dataset      the data's name for the front matter (e.g. "amazon (shipped sample)")
      teacher      the teacher's shape for a student: {"layers", "hidden", "heads", "intermediate"}
      results      a results.json block: {"dev": {domain: acc, ..., "average": acc}, "test": {...}}
                   (for an int8 export: the accuracy measured on the int8 model)
      compression  {"params" | "size_bytes" | "latency_ms": (this model, teacher)}; from the compression report (engine/compression.py)
      int8         the int8 export beside this fp32 one: {"path" (relative), "size_bytes", "latency_ms": {batch: ms},
                   "test": {...}, "fp32": {"size_bytes", "latency_ms", "test"}}
      max_seq_len  data.max_seq_len (the example truncates to it; default 128)
      command      the command line that produced it (`run_dir` is shown as RUN, other local paths as LOCAL_PATH)
      run_dir      the run directory, shown as RUN in the command
      domains, labels  override config.json's hrkd_domains / hrkd_labels
    """
    path = Path(model_dir) / "README.md"
    atomic_write_text(path, render_model_card(model_dir, info))
    return path
