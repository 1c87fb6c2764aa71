"""Compression report: what the student buys (size, CPU latency) and what it costs (accuracy).

Why CPU and batch 1 / 32: a distilled student is usually deployed for cheap CPU inference; batch 1
is the interactive case (latency-bound), batch 32 the offline one (throughput-bound). Latency is
the median of repeats after warm-up, with a fixed thread count, so a noisy shared machine moves it
less and teacher and student are timed under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from transformers.utils import logging as hf_logging

from hrkd_ds.errors import exit_on_user_error
from hrkd_ds.io import atomic_write_json
from hrkd_ds.models.loading import load_export

WEIGHT_SUFFIXES = (".safetensors", ".bin")
DEFAULT_BATCH_SIZES = (1, 32)


def load_model(model_dir: str | Path, attn: str | None = None, precision: str | None = None) -> torch.nn.Module:
    """An export's HF classifier in eval mode, through the one export loader (models/loading.py);
    attn None = the trainer's registered attention, precision None = what the directory holds."""
    model = load_export(model_dir, precision=precision, tokenizer=False).model.hf_model
    if attn is not None:
        model.set_attn_implementation(attn)
    return model.eval()


def weight_files(model_dir: str | Path) -> list[Path]:
    """The files holding weights (not config/tokenizer): what a deployment has to ship and load."""
    return sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total parameters (tied ones once) and those outside the embeddings (what depth/width cut)."""
    total = sum(p.numel() for p in model.parameters())
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    emb_module = getattr(base, "embeddings", None)  # word + position + type embeddings (and their norm)
    if emb_module is None and hasattr(model, "get_input_embeddings"):
        emb_module = model.get_input_embeddings()
    embedding = sum(p.numel() for p in emb_module.parameters()) if emb_module is not None else 0
    return {"params": total, "params_non_embedding": total - embedding}


def timing_inputs(cfg, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random in-vocab token ids, full attention mask (and zero token types): what every timing runs."""
    if seq_len > cfg.max_position_embeddings:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_position_embeddings {cfg.max_position_embeddings}")
    gen = torch.Generator().manual_seed(seed)
    inputs = {
        "input_ids": torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=gen),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
    }
    if getattr(cfg, "type_vocab_size", 0):
        inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
    return inputs


def median_ms(run: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median wall-clock ms of `run()` over `repeats` calls after `warmup` untimed ones."""
    return side_by_side_ms({"run": run}, repeats, warmup)["run"]


def side_by_side_ms(runs: Mapping[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, float]:
    """Median ms of each callable, timed in turn within every repeat, so a shared machine's load
    falls on all of them alike and their ratios mean something."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(max(1, repeats)):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def measure_latency(model: torch.nn.Module, batch_size: int, seq_len: int, *, repeats: int = 10,
                    warmup: int = 2, seed: int = 0) -> float:
    """Median wall-clock ms of one forward on random in-vocab token ids (full attention mask)."""
    inputs = timing_inputs(model.config, batch_size, seq_len, seed)
    return median_ms(lambda: model(**inputs), repeats, warmup)


def measure_onnx_latency(onnx, cfg, batch_size: int, seq_len: int, *, repeats: int = 10, warmup: int = 2,
                         seed: int = 0) -> float:
    """The same protocol on an ONNX Runtime session (models/onnx_model.OnnxExport): same inputs."""
    return median_ms(onnx_forward(onnx, timing_inputs(cfg, batch_size, seq_len, seed)), repeats, warmup)


def onnx_forward(onnx, inputs: Mapping[str, torch.Tensor]) -> Callable[[], Any]:
    """One ONNX Runtime forward on `inputs` (the graph's own input names), converted once, outside the timing."""
    feed = {k: v.numpy() for k, v in inputs.items() if k in onnx.inputs}
    return lambda: onnx.session.run(["logits"], feed)


def describe_model(model_dir: str | Path, *, seq_len: int, batch_sizes: Sequence[int], repeats: int,
                   warmup: int, attn: str | None) -> dict[str, Any]:
    """Parameters, weight bytes, shape and latency of one exported model (fp32 or int8: what it holds)."""
    model = load_model(model_dir, attn)
    files = weight_files(model_dir)
    cfg = model.config
    return {
        "dir": str(model_dir),
        **count_parameters(model),
        "size_bytes": sum(f.stat().st_size for f in files),
        "weight_files": [f.name for f in files],
        "layers": getattr(cfg, "num_hidden_layers", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "latency_ms": {str(b): measure_latency(model, b, seq_len, repeats=repeats, warmup=warmup) for b in batch_sizes},
    }


def describe_int8(int8_dir: str | Path, fp32: Mapping[str, Any], accuracy: Mapping[str, Any] | None,
                  fp32_accuracy: Mapping[str, Any] | None, **kw) -> dict[str, Any]:
    """The int8 export beside its fp32 student: bytes, latency, speedup, and the accuracy measured
    on the quantized model (test per domain, its average as % of the fp32 student's)."""
    d = describe_model(int8_dir, **kw)
    out = {key: d[key] for key in ("dir", "size_bytes", "weight_files", "latency_ms")}
    out["size_ratio"] = _ratio(fp32["size_bytes"], d["size_bytes"])
    out["speedup_vs_fp32"] = {b: _ratio(fp32["latency_ms"][b], d["latency_ms"][b]) for b in d["latency_ms"]}
    out["test"] = (accuracy or {}).get("test")
    out["retained_pct_of_fp32"] = _retained((accuracy or {}).get("test"), (fp32_accuracy or {}).get("test"))
    return out


def describe_onnx(onnx_path: str | Path, fp32: Mapping[str, Any], cfg, *, seq_len: int, batch_sizes: Sequence[int],
                  repeats: int, warmup: int, threads: int, **_) -> dict[str, Any]:
    """An .onnx export of the student under ONNX Runtime (same inputs, threads and repeats)."""
    from hrkd_ds.models.onnx_model import load_onnx_export

    onnx = load_onnx_export(onnx_path, threads=threads)
    lat = {str(b): measure_onnx_latency(onnx, cfg, b, seq_len, repeats=repeats, warmup=warmup) for b in batch_sizes}
    return {"path": str(onnx_path), "size_bytes": Path(onnx_path).stat().st_size, "latency_ms": lat,
            "speedup_vs_fp32": {b: _ratio(fp32["latency_ms"][b], v) for b, v in lat.items()}}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _retained(ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None) -> float | None:
    try:
        return 100.0 * float(ours["average"]) / float(theirs["average"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def accuracy_retained(results: Mapping[str, Any], split: str = "test") -> dict[str, float] | None:
    """Student average as % of the teacher's, from a results.json dict; None when either is absent."""
    try:
        t = float(results["teacher"][split]["average"])
        s = float(results["student"][split]["average"])
    except (KeyError, TypeError, ValueError):
        return None
    return {"teacher_average": t, "student_average": s, "retained_pct": 100.0 * s / t if t else float("nan")}


def compression_report(student_dir: str | Path, teacher_dir: str | Path, *, seq_len: int = 128,
                       batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, repeats: int = 10, warmup: int = 2,
                       threads: int = 1, attn: str | None = None,
                       results: Mapping[str, Any] | str | Path | None = None,
                       int8_dir: str | Path | None = None, onnx_path: str | Path | None = None) -> dict[str, Any]:
    """Student vs teacher: parameters, weight bytes, CPU latency, speedup, accuracy retained; with
    `int8_dir` / `onnx_path` also the student's int8 export and ONNX file timed the same way.

    `results`: a results.json dict or path; gives `accuracy` (test averages, % retained) when present,
    and the int8 model's own accuracy from `results["student"]["int8"]` (written by the run).
    `threads`: torch intra-op threads while timing (restored afterwards).
    """
    if isinstance(results, (str, Path)):
        results = json.loads(Path(results).read_text())
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    kw = dict(seq_len=seq_len, batch_sizes=batch_sizes, repeats=repeats, warmup=warmup, attn=attn)
    try:
        teacher = describe_model(teacher_dir, **kw)
        student = describe_model(student_dir, **kw)
        fp32_acc = (results or {}).get("student")
        int8 = describe_int8(int8_dir, student, (fp32_acc or {}).get("int8"), fp32_acc, **kw) if int8_dir else None
        cfg = load_export(student_dir, tokenizer=False).model.config if onnx_path else None
        onnx = describe_onnx(onnx_path, student, cfg, threads=threads, **kw) if onnx_path else None
    finally:
        torch.set_num_threads(previous)
    rep = {
        "settings": {"seq_len": seq_len, "batch_sizes": list(batch_sizes), "repeats": repeats, "warmup": warmup,
                     "threads": threads, "attn": attn or "hrkd_eager", "device": "cpu"},
        "teacher": teacher,
        "student": student,
        "param_ratio": _ratio(teacher["params"], student["params"]),
        "size_ratio": _ratio(teacher["size_bytes"], student["size_bytes"]),
        "speedup": {b: _ratio(teacher["latency_ms"][b], student["latency_ms"][b]) for b in teacher["latency_ms"]},
        "accuracy": accuracy_retained(results) if results is not None else None,
    }
    if int8 is not None:
        rep["int8"] = int8
    if onnx is not None:
        rep["onnx"] = onnx
    return rep


def format_report(rep: dict[str, Any]) -> str:
    """A plain-text table of a compression_report dict."""
    t, s = rep["teacher"], rep["student"]
    rows = [
        ("", "teacher", "student", "teacher/student"),
        ("layers x hidden", f"{t['layers']} x {t['hidden_size']}", f"{s['layers']} x {s['hidden_size']}", ""),
        ("params (M)", f"{t['params'] / 1e6:.2f}", f"{s['params'] / 1e6:.2f}", f"{rep['param_ratio']:.2f}x"),
        ("non-embedding params (M)", f"{t['params_non_embedding'] / 1e6:.2f}", f"{s['params_non_embedding'] / 1e6:.2f}",
         f"{t['params_non_embedding'] / max(s['params_non_embedding'], 1):.2f}x"),
        ("weights on disk (MB)", f"{t['size_bytes'] / 1e6:.2f}", f"{s['size_bytes'] / 1e6:.2f}", f"{rep['size_ratio']:.2f}x"),
    ]
    for b, sp in rep["speedup"].items():
        rows.append((f"latency batch {b} (ms)", f"{t['latency_ms'][b]:.2f}", f"{s['latency_ms'][b]:.2f}", f"{sp:.2f}x speedup"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    st = rep["settings"]
    lines.append(f"(CPU, {st['threads']} thread(s), seq len {st['seq_len']}, median of {st['repeats']} after {st['warmup']} warm-up, attention {st['attn']})")
    acc = rep.get("accuracy")
    if acc:
        lines.append(f"accuracy retained: {acc['retained_pct']:.2f}% (test average: student {100 * acc['student_average']:.2f}, "
                     f"teacher {100 * acc['teacher_average']:.2f})")
    if rep.get("int8") or rep.get("onnx"):
        lines += ["", *format_variants(rep)]
    return "\n".join(lines)


def format_variants(rep: dict[str, Any]) -> list[str]:
    """The student's serving formats side by side: size, latency per batch size, test average."""
    s = rep["student"]
    batches = list(s["latency_ms"])
    acc = (rep.get("accuracy") or {}).get("student_average")
    variants = [("PyTorch fp32", s, acc)]
    if rep.get("int8"):
        variants.append(("PyTorch int8", rep["int8"], (rep["int8"].get("test") or {}).get("average")))
    if rep.get("onnx"):
        variants.append(("ONNX Runtime fp32", rep["onnx"], acc))  # parity-checked on export: same predictions
    header = ("student as", "size (MB)", *[f"ms batch {b}" for b in batches], "test average")
    rows = [header] + [(name, f"{v['size_bytes'] / 1e6:.2f}",
                        *[f"{v['latency_ms'][b]:.2f} ({_ratio(s['latency_ms'][b], v['latency_ms'][b]):.2f}x)" for b in batches],
                        "" if a is None else f"{100 * a:.2f}") for name, v, a in variants]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _default_results(student_dir: Path) -> Path | None:
    """<run>/student/model -> <run>/results.json, when that layout is what we were given."""
    cand = student_dir.resolve().parent.parent / "results.json"
    return cand if cand.is_file() else None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hrkd_ds.engine.compression", description=__doc__.splitlines()[0])
    ap.add_argument("student_dir", type=Path)
    ap.add_argument("teacher_dir", type=Path)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    ap.add_argument("--attn", default=None, help="attention implementation (default: the trainer's hrkd_eager)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results.json for accuracy retained (default: <student_dir>/../../results.json if present)")
    ap.add_argument("--int8", type=Path, default=None,
                    help="the student's int8 export (default: <student_dir>-int8 if present)")
    ap.add_argument("--onnx", type=Path, default=None, help="the student's .onnx file (hrkd-export-onnx), timed too")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    hf_logging.disable_progress_bar()
    results = args.results or _default_results(args.student_dir)
    sibling = args.student_dir.with_name(args.student_dir.name + "-int8")
    int8 = args.int8 or (sibling if (sibling / "config.json").is_file() else None)
    with exit_on_user_error(ap.prog):
        rep = compression_report(args.student_dir, args.teacher_dir, seq_len=args.seq_len, batch_sizes=args.batch_sizes,
                                 repeats=args.repeats, warmup=args.warmup, threads=args.threads, attn=args.attn,
                                 results=results, int8_dir=int8, onnx_path=args.onnx)
    print(format_report(rep))
    if results is not None and rep["accuracy"] is None:
        print(f"(no teacher/student test average in {results})", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, rep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
