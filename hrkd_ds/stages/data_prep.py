"""Splits, tokenizer and tokenized datasets for a run; rank 0 builds the caches, the others reuse them."""

from __future__ import annotations

from pathlib import Path

from hrkd_ds.config import Config, TokenizerConfig
from hrkd_ds.data.multidomain import TokenizedSplits, tokenize_splits
from hrkd_ds.data.splits import RawSplits, load_splits
from hrkd_ds.data.teacher_encoding import encode_for_teacher
from hrkd_ds.data.tokenizer import build_tokenizer
from hrkd_ds.engine.distributed import DistInfo, any_rank
from hrkd_ds.errors import UserError


def resolve_teacher_dir(cfg: Config) -> Path | None:
    """`teacher_from` may name a finished run or a Hugging Face model directory."""
    if not cfg.teacher_from:
        return None
    p = Path(cfg.teacher_from)
    if (p / "teacher" / "model").is_dir():
        if not (p / "teacher" / "DONE").is_file():
            raise UserError(f"config field 'teacher_from': the teacher stage of {cfg.teacher_from} has not finished")
        p = p / "teacher" / "model"
    return p  # checked with the other model directories (models/checks.py)


def prepare_data(cfg: Config, dist: DistInfo, teacher_dir: Path | None, cache_dir: str):
    """(raw splits, tokenizer, tokenized splits). A teacher from elsewhere brings its tokenizer,
    unless it reads the text with its own (teacher.tokenizer: data/teacher_encoding.py, `data.teacher`)."""
    tok_cfg = cfg.tokenizer
    if teacher_dir is not None and not cfg.teacher.tokenizer and (teacher_dir / "tokenizer_config.json").is_file():
        tok_cfg = TokenizerConfig(kind="pretrained", path=str(teacher_dir))
    raw: RawSplits = load_splits(cfg.data)
    for turn in (0, 1):
        error = None
        if dist.is_main == (turn == 0):
            try:
                tokenizer = build_tokenizer(tok_cfg, raw, cache_dir)
                data: TokenizedSplits = tokenize_splits(raw, tokenizer, cfg.data.max_seq_len, cache_dir)
                data.teacher = encode_for_teacher(cfg.teacher.tokenizer, raw, cfg.data.max_seq_len, cache_dir)
            except Exception as err:  # noqa: BLE001 - re-raised below, after every rank has heard of it
                error = err
        if any_rank(error is not None, dist.device):  # every rank stops, none waits in a collective
            raise error or UserError("tokenizer/data preparation failed on another rank (see its message)")
    return raw, tokenizer, data
