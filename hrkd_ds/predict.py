"""hrkd-predict: label every row of a table with an exported hrkd model (teacher or student).

    hrkd-predict RUN/student/model reviews.csv --output predicted.csv [--domain books]

Rows are encoded exactly as the trainer encodes them (same truncation, text pairs, token type
ids, right padding with the tokenizer's pad id) and run through the trainer's own
MultiDomainClassifier, so the accuracy on a labelled split is the one in results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from hrkd_ds.data.collate import pad_rows
from hrkd_ds.errors import UserError, exit_on_user_error
from hrkd_ds.models.attention import register_attention
from hrkd_ds.models.encoder import MultiDomainClassifier
from hrkd_ds.tables import read_frame, table_kind, write_frame

PROG = "hrkd-predict"
DEFAULT_MAX_SEQ_LEN = 128  # the trainer's data.max_seq_len default


@dataclass
class Export:
    """An exported model directory, loaded."""

    model: MultiDomainClassifier
    tokenizer: PreTrainedTokenizerBase
    domains: list[str]
    labels: list[str]
    max_seq_len: int | None  # recorded in hrkd.json by the exporter, if it did


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="exported model: RUN/student/model or RUN/teacher/model")
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
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return p.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def load_export(model_dir: Path) -> Export:
    """Refuse anything that is not an hrkd export with one line; needs no model card."""
    if not model_dir.is_dir():
        raise UserError(f"model directory not found: {model_dir}")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: not an hrkd export (no config.json); pass RUN/student/model or RUN/teacher/model")
    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir}: cannot read config.json: {_first_line(err)}") from None
    domains, labels = getattr(config, "hrkd_domains", None), getattr(config, "hrkd_labels", None)
    if not domains or not labels or len(domains) * len(labels) != config.num_labels:
        raise UserError(f"{model_dir}: not an hrkd export (config.json lacks a consistent hrkd_domains/hrkd_labels layout)")
    try:
        # The trainer's attention function, not transformers' default SDPA: the same arithmetic as
        # the trainer's evaluation, so no near-tie flips between the two. Plain loading works too.
        hf = AutoModelForSequenceClassification.from_pretrained(str(model_dir), config=config, local_files_only=True,
                                                                attn_implementation=register_attention())
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir}: cannot load the model or its tokenizer: {_first_line(err)}") from None
    if tokenizer.pad_token_id is None:
        raise UserError(f"{model_dir}: the tokenizer has no pad token")
    meta_file = model_dir / "hrkd.json"
    try:
        meta: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except json.JSONDecodeError as err:
        raise UserError(f"{meta_file}: not valid JSON ({err.msg})") from None
    return Export(MultiDomainClassifier(hf).eval(), tokenizer, list(domains), list(labels), meta.get("max_seq_len"))


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r}: {_first_line(err)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available")
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
def predict(export: Export, texts: list[str], pairs: list[str] | None, ids: list[int], batch_size: int,
            max_seq_len: int, device: torch.device) -> tuple[list[int], list[float]]:
    """(label index, its probability within the row's domain) for every row, in order."""
    model = export.model.to(device)
    preds: list[int] = []
    probs: list[float] = []
    with tqdm(total=len(texts), unit="row", desc=PROG, dynamic_ncols=True) as bar:
        for start in range(0, len(texts), batch_size):
            end = start + batch_size
            batch = encode(export.tokenizer, texts[start:end], pairs[start:end] if pairs is not None else None, max_seq_len)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch, domain_ids=torch.tensor(ids[start:end], device=device)).logits.float()  # (n, C)
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
    export = load_export(args.model_dir)
    ids = domain_ids(frame, args, export.domains)
    limit = export.model.config.max_position_embeddings
    # A model built from sizes has exactly data.max_seq_len positions, so the cap recovers it.
    max_seq_len = args.max_seq_len or export.max_seq_len or min(DEFAULT_MAX_SEQ_LEN, limit)
    if max_seq_len > limit:
        raise UserError(f"max sequence length {max_seq_len} exceeds the model's max_position_embeddings {limit} (--max-seq-len)")
    preds, probs = predict(export, texts, pairs, ids, args.batch_size, max_seq_len, resolve_device(args.device))
    out = frame.copy()
    out["prediction"] = [export.labels[i] for i in preds]
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
