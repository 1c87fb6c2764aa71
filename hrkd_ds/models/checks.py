"""Model and tokenizer directories checked before any work starts.

Hugging Face reports a missing or incomplete local directory as an OSError about hub repo ids,
deep inside a stage; these checks say which config field points where, in one line, first.
Weights must be safetensors: a pickled `pytorch_model.bin` is never loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from hrkd_ds.errors import UserError

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
CONVERT_HINT = ("convert it once where you trust the file: "
                "AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")


def _json(path: Path, field: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{field}: {path} is not readable JSON ({err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{field}: {path} is not a JSON object")
    return obj


def _check_weights(p: Path, field: str) -> None:
    index = p / SAFETENSORS[1]
    if (p / SAFETENSORS[0]).is_file():
        return
    if index.is_file():
        shards = sorted(set(_json(index, field).get("weight_map", {}).values()))
        missing = [s for s in shards if not (p / s).is_file()]
        if not shards or missing:
            raise UserError(f"{field}: {index} names shard {missing[0] if missing else '(none)'} that is not in {p}")
        return
    if any((p / name).is_file() for name in PICKLED):
        raise UserError(f"{field}: {p} has only pickled pytorch_model.bin weights, which are never loaded; {CONVERT_HINT}")
    raise UserError(f"{field}: no model weights ({SAFETENSORS[0]}) in {p}")


def check_model_dir(path: str | Path, field: str, weights: bool = True, tokenizer: bool = False) -> Path:
    """A local HF directory: config.json, safetensors weights and/or tokenizer files as asked."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{field}: directory not found: {p}")
    if weights:
        if not (p / "config.json").is_file():
            raise UserError(f"{field}: no config.json in {p} (not a Hugging Face model directory)")
        if "model_type" not in _json(p / "config.json", field):
            raise UserError(f"{field}: {p / 'config.json'} has no model_type")
        _check_weights(p, field)
    if tokenizer and not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{field}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...) in {p}")
    return p


def check_model_sources(cfg, teacher_dir: Path | None) -> None:
    """Every directory the run will load from; `teacher_dir` is teacher_from already resolved."""
    for field, path in (("teacher.pretrained", cfg.teacher.pretrained), ("student.pretrained", cfg.student.pretrained)):
        if path:
            check_model_dir(path, field)
    if teacher_dir is not None:
        check_model_dir(teacher_dir, "teacher_from")
    if cfg.tokenizer.kind == "pretrained":
        if not cfg.tokenizer.path:
            raise UserError("tokenizer.path: required when tokenizer.kind is 'pretrained'")
        check_model_dir(cfg.tokenizer.path, "tokenizer.path", weights=False, tokenizer=True)


def check_fit(hf_config, vocab_size: int, pad_id: int, max_seq_len: int, where: str) -> None:
    """A model built elsewhere must accept this tokenizer's ids, its padding id and the sequence length."""
    if vocab_size > hf_config.vocab_size:
        raise UserError(f"{where}: tokenizer vocab {vocab_size} exceeds the model's vocab_size {hf_config.vocab_size} (a different tokenizer?)")
    model_pad = getattr(hf_config, "pad_token_id", None)
    if model_pad is not None and model_pad != pad_id:
        raise UserError(f"{where}: tokenizer pad id {pad_id} differs from the model's pad_token_id {model_pad} (a different tokenizer?)")
    if max_seq_len > hf_config.max_position_embeddings:
        raise UserError(f"{where}: data.max_seq_len {max_seq_len} exceeds max_position_embeddings {hf_config.max_position_embeddings}")


def check_tokenizer_matches(model_dir: str | Path, tokenizer, field: str) -> None:
    """A pretrained model that ships a tokenizer was trained on those ids; feeding it another
    tokenizer's ids (e.g. a freshly trained SentencePiece) runs, and learns nothing useful."""
    p = Path(model_dir)
    if not any((p / name).is_file() for name in TOKENIZER_FILES):
        return
    own = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    if own.get_vocab() != tokenizer.get_vocab():
        raise UserError(f"{field}: {p} ships its own tokenizer, different from the one in use; "
                        f"set tokenizer.kind=pretrained tokenizer.path={p}")
