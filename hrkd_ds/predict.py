"""hrkd-predict: label every row of a table with an exported hrkd model (teacher or student).

    hrkd-predict RUN/student/model reviews.csv --output predicted.csv [--domain books]
    hrkd-predict RUN/student/model-int8 reviews.csv -o predicted.csv     # the int8 export
    hrkd-predict RUN/student/model reviews.csv -o p.csv --precision int8  # quantized in memory
    hrkd-predict student.onnx reviews.csv -o predicted.csv               # ONNX Runtime

Rows are encoded exactly as the trainer encodes them (same truncation, text pairs, token type
ids, right padding with the tokenizer's pad id) and run through the trainer's own
MultiDomainClassifier (loaded by the one export loader, models/loading.py), so the accuracy on a
labelled split is the one in results.json; an .onnx file runs the same graph under ONNX Runtime.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from hrkd_ds.data.collate import pad_rows
from hrkd_ds.errors import UserError, exit_on_user_error
from hrkd_ds.models.loading import PRECISIONS, Export, load_export
from hrkd_ds.models.onnx_model import OnnxExport, load_onnx_export
from hrkd_ds.tables import read_frame, table_kind, write_frame

PROG = "hrkd-predict"
DEFAULT_MAX_SEQ_LEN = 128  # the trainer's data.max_seq_len default


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="exported model: RUN/student/model, RUN/student/model-int8, "
                                                "RUN/teacher/model, or an .onnx file written by hrkd-export-onnx")
    p.add_argument("input", type=Path, help="CSV, TSV, JSONL or Parquet file")
    p.add_argument("--output", "-o", type=Path, required=True, help="written in the format of its suffix")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", default="", help="second text of a pair task (default: none)")
    p.add_argument("--domain-column", default="domain")
    p.add_argument("--domain", default="", help="use this domain for every row (no domain column needed)")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--max-seq-len", type=_positive, default=None,
                   help=f"default: the length recorded in the export, else {DEFAULT_MAX_SEQ_LEN} "
                        "(capped at the model's max_position_embeddings)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available; "
                                                  "int8 and .onnx models run on the CPU)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: what the directory holds; int8 of an fp32 export quantizes it in memory")
    return p.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def load_model(path: Path, precision: str | None) -> Export | OnnxExport:
    """An export directory through the one export loader, or an .onnx file through ONNX Runtime."""
    if path.suffix == ".onnx":
        if precision:
            raise UserError(f"--precision {precision}: an .onnx file holds its own precision (fp32); drop the option")
        return load_onnx_export(path)
    return load_export(path, precision=precision)


def resolve_device(name: str | None, served: Export | OnnxExport | None = None) -> torch.device:
    """The device to run on: int8 kernels and ONNX Runtime's CPU provider run on the CPU only."""
    cpu_only = served is not None and served.precision in ("int8", "onnx")
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() and not cpu_only else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r}: {str(err).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available")
    if cpu_only and device.type != "cpu":
        raise UserError(f"--device {name}: the {served.precision} model runs on the CPU only (--device cpu)")
    return device


def column(frame: pd.DataFrame, name: str, option: str, source: Path) -> list[str]:
    """A column as the trainer's table reader sees it: missing values are empty text."""
    if name not in frame.columns:
        raise UserError(f"{source}: missing column {name!r} ({option}; columns: {', '.join(map(str, frame.columns))})")
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame[name]]


def domain_ids(frame: pd.DataFrame, args: argparse.Namespace, domains: list[str]) -> list[int]:
    index = {d: k for k, d in enumerate(domains)}
    if args.domain:
        if args.domain not in index:
            raise UserError(f"--domain {args.domain!r} is not one of the model's domains: {', '.join(domains)}")
        return [index[args.domain]] * len(frame)
    values = column(frame, args.domain_column, "--domain-column, or give --domain", args.input)
    bad = next((i for i, v in enumerate(values) if v not in index), None)
    if bad is not None:
        raise UserError(f"{args.input} row {bad + 1}: domain {values[bad]!r} is not one of the model's domains: {', '.join(domains)}")
    return [index[v] for v in values]


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], pairs: list[str] | None, max_seq_len: int) -> dict[str, torch.Tensor]:
    """The trainer's tokenization (data/multidomain.py) and padding (data/collate.py) for one batch."""
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_seq_len, return_token_type_ids=True,
                    return_attention_mask=True)
    return pad_rows(enc, tokenizer.pad_token_id)


@torch.no_grad()
def predict(served: Export | OnnxExport, texts: list[str], pairs: list[str] | None, ids: list[int], batch_size: int,
            max_seq_len: int, device: torch.device) -> tuple[list[int], list[float]]:
    """(label index, its probability within the row's domain) for every row, in order."""
    if isinstance(served, Export):
        served.model.to(device)
    preds: list[int] = []
    probs: list[float] = []
    with tqdm(total=len(texts), unit="row", desc=PROG, dynamic_ncols=True) as bar:
        for start in range(0, len(texts), batch_size):
            end = start + batch_size
            batch = encode(served.tokenizer, texts[start:end], pairs[start:end] if pairs is not None else None, max_seq_len)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = served.domain_logits(batch, torch.tensor(ids[start:end], device=device)).float()  # (n, C)
            pred = logits.argmax(dim=-1)  # as the trainer's evaluation picks it
            prob = torch.softmax(logits, dim=-1).gather(1, pred[:, None]).squeeze(1)
            preds += pred.tolist()
            probs += prob.tolist()
            bar.update(len(pred))
    return preds, probs


def run(args: argparse.Namespace) -> None:
    """Validate everything cheap first (output type, columns, domains), then load and predict."""
    table_kind(args.output, "--output")
    frame = read_frame(args.input)
    texts = column(frame, args.text_column, "--text-column", args.input)
    pairs = column(frame, args.text_pair_column, "--text-pair-column", args.input) if args.text_pair_column else None
    served = load_model(args.model_dir, args.precision)
    ids = domain_ids(frame, args, served.domains)
    limit = served.max_positions
    # A model built from sizes has exactly data.max_seq_len positions, so the cap recovers it.
    max_seq_len = args.max_seq_len or served.max_seq_len or min(DEFAULT_MAX_SEQ_LEN, limit)
    if max_seq_len > limit:
        raise UserError(f"max sequence length {max_seq_len} exceeds the model's max_position_embeddings {limit} (--max-seq-len)")
    device = resolve_device(args.device, served)
    preds, probs = predict(served, texts, pairs, ids, args.batch_size, max_seq_len, device)
    out = frame.copy()
    out["prediction"] = [served.labels[i] for i in preds]
    out["probability"] = probs
    write_frame(out, args.output)
    print(f"{PROG}: wrote {len(out)} rows to {args.output}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()  # keep the console for the progress bar and our one-line errors
    hf_logging.disable_progress_bar()
    with exit_on_user_error(PROG):
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
