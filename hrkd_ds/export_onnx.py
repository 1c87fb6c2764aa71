"""hrkd-export-onnx: an exported student (or teacher) as one .onnx file, checked before it is kept.

    hrkd-export-onnx RUN/student/model student.onnx [--examples dev.csv] [--json report.json]

The K x C-logit model is exported with dynamic batch and sequence axes (engine/onnx_export.py),
then ONNX Runtime runs it on real examples (the run's dev split, read through RUN/config.yaml,
or `--examples`) beside the trainer's own forward: the file is kept only if the largest logit
difference is within `--atol` and the row's predicted label is the same on at least
`--min-agreement` of them. Latency of PyTorch fp32 (the trainer's attention and Hugging Face's
sdpa), PyTorch int8 and ONNX Runtime is measured with the compression report's inputs
(engine/compression.py), the runtimes in turn within each repeat so their ratios are side by
side. Bad input: one line, exit 2; a failed check: one line, exit 1; nothing is written in
either case.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers.utils import logging as hf_logging

from hrkd_ds.engine.compression import DEFAULT_BATCH_SIZES, onnx_forward, side_by_side_ms, timing_inputs
from hrkd_ds.engine.onnx_export import export_onnx
from hrkd_ds.errors import UserError, exit_on_user_error
from hrkd_ds.io import atomic_output, atomic_write_json
from hrkd_ds.models.int8 import quantize_linears
from hrkd_ds.models.loading import Export, load_export
from hrkd_ds.models.onnx_model import OnnxExport, load_onnx_export
from hrkd_ds.predict import DEFAULT_MAX_SEQ_LEN, column, encode

PROG = "hrkd-export-onnx"
EVAL_BATCH = 32


class CheckFailed(Exception):
    """The ONNX graph does not reproduce the PyTorch model closely enough."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="an fp32 export: RUN/student/model or RUN/teacher/model")
    p.add_argument("output", type=Path, help="the .onnx file to write")
    p.add_argument("--examples", type=Path, default=None,
                   help="CSV/TSV/JSONL/Parquet with text (+ domain) columns (default: the run's dev split via RUN/config.yaml)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", default="")
    p.add_argument("--domain-column", default="domain")
    p.add_argument("--max-examples", type=int, default=4000, help="check at most this many examples")
    p.add_argument("--atol", type=float, default=1e-3, help="largest allowed |logit difference| to PyTorch")
    p.add_argument("--min-agreement", type=float, default=0.995, help="least share of identical predictions")
    p.add_argument("--threads", type=int, default=1, help="CPU threads while timing (both runtimes)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-latency", action="store_true", help="skip the timing")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    return p.parse_args(argv)


def _run_dev_examples(model_dir: Path) -> tuple[list[str], list[str] | None, list[str]]:
    """The run's dev split (texts, pairs, domains) from RUN/config.yaml, RUN = model_dir/../.."""
    from hrkd_ds.config import load_config
    from hrkd_ds.data.splits import load_splits

    config = model_dir.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise UserError(f"{model_dir}: no run config at {config} to read dev examples from; pass --examples FILE")
    raw = load_splits(load_config(str(config)).data)
    texts, pairs, domains = [], [], []
    for d in raw.domains:
        dev = raw.splits["dev"][d]
        texts += list(dev["text"])
        pairs += list(dev["text_pair"]) if "text_pair" in dev.column_names else [""] * len(dev)
        domains += [d] * len(dev)
    return texts, (pairs if any(pairs) else None), domains


def _file_examples(args: argparse.Namespace, domains: list[str]) -> tuple[list[str], list[str] | None, list[str]]:
    from hrkd_ds.tables import read_frame

    frame = read_frame(args.examples)
    texts = column(frame, args.text_column, "--text-column", args.examples)
    pairs = column(frame, args.text_pair_column, "--text-pair-column", args.examples) if args.text_pair_column else None
    if args.domain_column in frame.columns:
        rows = column(frame, args.domain_column, "--domain-column", args.examples)
    else:
        rows = [domains[i % len(domains)] for i in range(len(texts))]  # no domain: every slice is checked
    bad = next((i for i, d in enumerate(rows) if d not in domains), None)
    if bad is not None:
        raise UserError(f"{args.examples} row {bad + 1}: domain {rows[bad]!r} is not one of the model's domains: {', '.join(domains)}")
    return texts, pairs, rows


def _spread(n: int, limit: int) -> list[int]:
    """At most `limit` positions evenly over n rows (every domain keeps its share)."""
    return list(range(n)) if n <= limit else [round(i * (n - 1) / (limit - 1)) for i in range(limit)]


@torch.no_grad()
def check_parity(export: Export, onnx: OnnxExport, texts, pairs, domains, max_seq_len: int) -> dict[str, Any]:
    """ONNX Runtime against the trainer's forward on every example, in batches of varying length."""
    index = {d: k for k, d in enumerate(export.domains)}
    C = len(export.labels)
    worst, same, lengths = 0.0, 0, set()
    for start in range(0, len(texts), EVAL_BATCH):
        end = start + EVAL_BATCH
        batch = encode(export.tokenizer, texts[start:end], pairs[start:end] if pairs else None, max_seq_len)
        ids = torch.tensor([index[d] for d in domains[start:end]])
        ours = onnx.all_logits(batch)
        theirs = export.model(**batch, domain_ids=ids).all_logits.float()
        worst = max(worst, float((ours - theirs).abs().max()))
        rows = torch.arange(len(ids))
        pick = lambda x: x.view(len(ids), -1, C)[rows, ids].argmax(-1)  # noqa: E731
        same += int((pick(ours) == pick(theirs)).sum())
        lengths.add(int(batch["input_ids"].shape[1]))
    return {"examples": len(texts), "max_abs_logit_diff": worst, "argmax_agreement": same / max(len(texts), 1),
            "batch_lengths": sorted(lengths)}


RUNTIMES = {"torch_fp32": "PyTorch fp32", "torch_fp32_sdpa": "PyTorch fp32 (sdpa)", "torch_int8": "PyTorch int8",
            "onnxruntime": "ONNX Runtime"}


def measure(export: Export, onnx_path: Path, seq_len: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """ms per forward (median of repeats, the compression report's inputs), the runtimes timed in
    turn within each repeat: PyTorch fp32 with the trainer's attention and with Hugging Face's
    default (sdpa, what `from_pretrained` serves), PyTorch int8, ONNX Runtime."""
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        fp32 = export.model.hf_model
        sdpa = copy.deepcopy(fp32)
        sdpa.set_attn_implementation("sdpa")
        models = {"torch_fp32": fp32, "torch_fp32_sdpa": sdpa, "torch_int8": quantize_linears(fp32)}
        onnx = load_onnx_export(onnx_path, threads=args.threads)
        out = {}
        for b in DEFAULT_BATCH_SIZES:
            inputs = timing_inputs(fp32.config, b, seq_len)
            runs = {name: (lambda m=m: m(**inputs)) for name, m in models.items()}
            runs["onnxruntime"] = onnx_forward(onnx, inputs)
            with torch.inference_mode():
                out[str(b)] = side_by_side_ms(runs, args.repeats, args.warmup)
        return out
    finally:
        torch.set_num_threads(previous)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.output.suffix != ".onnx":
        raise UserError(f"{args.output}: the output must be an .onnx file")
    if not 0 < args.min_agreement <= 1 or args.atol <= 0 or args.max_examples < 1 or args.threads < 1:
        raise UserError("--min-agreement must be in (0, 1], --atol > 0, --max-examples and --threads >= 1")
    export = load_export(args.model_dir)
    if export.precision != "fp32":
        raise UserError(f"{args.model_dir}: an {export.precision} export; ONNX export takes the fp32 one (RUN/student/model)")
    texts, pairs, domains = _file_examples(args, export.domains) if args.examples else _run_dev_examples(args.model_dir)
    if not texts:
        raise UserError(f"{args.examples or args.model_dir}: no examples to check the export on")
    keep = _spread(len(texts), args.max_examples)
    texts, domains = [texts[i] for i in keep], [domains[i] for i in keep]
    pairs = [pairs[i] for i in keep] if pairs else None
    seq_len = min(export.max_seq_len or DEFAULT_MAX_SEQ_LEN, export.max_positions)
    with atomic_output(args.output) as tmp:
        export_onnx(export, tmp)
        onnx = load_onnx_export(tmp)
        parity = check_parity(export, onnx, texts, pairs, domains, seq_len)
        if parity["max_abs_logit_diff"] > args.atol or parity["argmax_agreement"] < args.min_agreement:
            raise CheckFailed(f"ONNX Runtime differs from PyTorch on {parity['examples']} examples: max |logit diff| "
                              f"{parity['max_abs_logit_diff']:.2e} (bound {args.atol:g}), same prediction on "
                              f"{100 * parity['argmax_agreement']:.2f}% (need {100 * args.min_agreement:.2f}%); nothing written")
        latency = None if args.no_latency else measure(export, tmp, seq_len, args)
    report = {"onnx": str(args.output), "size_bytes": args.output.stat().st_size, "model_dir": str(args.model_dir),
              "fusions": onnx.fusions, "parity": parity, "latency_ms": latency,
              "settings": {"seq_len": seq_len, "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
                           "device": "cpu", "atol": args.atol, "min_agreement": args.min_agreement}}
    if args.json:
        atomic_write_json(args.json, report)
    return report


def format_report(rep: dict[str, Any]) -> str:
    p, st = rep["parity"], rep["settings"]
    lines = [f"{PROG}: wrote {rep['onnx']} ({rep['size_bytes'] / 1e6:.2f} MB)",
             f"checked on {p['examples']} examples (batch lengths {p['batch_lengths'][0]}-{p['batch_lengths'][-1]}): "
             f"max |logit diff| {p['max_abs_logit_diff']:.2e} (bound {st['atol']:g}), "
             f"same prediction on {100 * p['argmax_agreement']:.2f}%",
             "fused: " + (", ".join(f"{k} x{v}" for k, v in rep["fusions"].items()) or "nothing (not a right-padded BERT layout)")]
    for b, ms in (rep["latency_ms"] or {}).items():
        lines.append(f"latency batch {b} (ms, CPU, {st['threads']} thread(s), seq len {st['seq_len']}, median of "
                     f"{st['repeats']}, side by side): " + ", ".join(f"{RUNTIMES[k]} {v:.2f}" for k, v in ms.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with exit_on_user_error(PROG):
        try:
            rep = run(args)
        except CheckFailed as err:
            print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
            return 1
    print(format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
