"""Tokenizer: SentencePiece trained on the training text, or a pretrained one from a local dir.

The SentencePiece model is converted to a `tokenizers` backend inside a
`PreTrainedTokenizerFast`, so the exported student directory loads with `AutoTokenizer` alone
(no sentencepiece protobuf at inference time) and produces BERT-style
`[CLS] a [SEP] b [SEP]` with token_type_ids.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import generate_merges

from hrkd_ds.data.splits import RawSplits
from hrkd_ds.errors import UserError
from hrkd_ds.models.checks import check_model_dir

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, fixed: pad id 0
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
_FORMAT_VERSION = "sp-hf-1"  # bump when the conversion changes, so stale caches are not reused
_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]


def training_text(raw: RawSplits) -> Iterator[str]:
    """Train split only (dev/test must not leak into the vocabulary), fixed domain order."""
    for d in raw.domains:
        ds = raw.splits["train"][d]
        for text, pair in zip(ds["text"], ds["text_pair"]):
            yield text
            if pair:
                yield pair


def cache_key(tok_cfg, raw: RawSplits) -> str:
    h = hashlib.sha256(json.dumps([_FORMAT_VERSION, tok_cfg.vocab_size, tok_cfg.model_type]).encode())
    for line in training_text(raw):
        h.update(line.encode("utf-8") + b"\x1e")
    return h.hexdigest()[:20]


def train_sentencepiece(lines: Iterator[str], vocab_size: int, model_type: str) -> bytes:
    """Deterministic: all sentences, no shuffling, one thread; specials pinned to ids 0..4.

    max_sentence_length is raised because SentencePiece silently skips longer "sentences" and a
    whole review is one; hard_vocab_limit is off so a small corpus yields a smaller vocabulary
    instead of an error.
    """
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_writer=buf, vocab_size=vocab_size, model_type=model_type,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1, pad_piece="[PAD]", unk_piece="[UNK]",
        control_symbols=SPECIALS[2:], input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
        max_sentence_length=1 << 20, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    return buf.getvalue()


def _backend_model(proto: sentencepiece_model_pb2.ModelProto, model_type: str) -> models.Model:
    pieces = [(p.piece, p.score) for p in proto.pieces]
    if model_type == "unigram":
        return models.Unigram(pieces, unk_id=UNK_ID, byte_fallback=False)
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    return models.BPE(vocab, generate_merges(vocab, skip_tokens=SPECIALS), unk_token="[UNK]", fuse_unk=True, byte_fallback=False)


def sentencepiece_to_hf(model: bytes, model_type: str) -> PreTrainedTokenizerFast:
    """Same pieces and ids as the SentencePiece model (checked in tests), BERT-style pairs."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    backend = Tokenizer(_backend_model(proto, model_type))
    charsmap = proto.normalizer_spec.precompiled_charsmap
    backend.normalizer = normalizers.Sequence(
        ([normalizers.Precompiled(charsmap)] if charsmap else []) + [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=_INPUT_NAMES, padding_side="right",
    )  # fmt: skip


def _publish(tmp: Path, final: Path) -> None:
    """Atomic rename; if another process won the race its identical copy is kept."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / "tokenizer.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _build_sentencepiece(tok_cfg, raw: RawSplits, out: Path) -> None:
    model = train_sentencepiece(training_text(raw), tok_cfg.vocab_size, tok_cfg.model_type)
    (out / "spm.model").write_bytes(model)
    sentencepiece_to_hf(model, tok_cfg.model_type).save_pretrained(out)


def build_tokenizer(tok_cfg, raw: RawSplits, cache_dir: str) -> PreTrainedTokenizerBase:
    """Cached under `<cache_dir>/tokenizer/<key>`; key = hash(training text, vocab_size, model_type)."""
    if tok_cfg.kind == "pretrained":
        return load_pretrained(tok_cfg.path)
    if tok_cfg.kind != "sentencepiece":
        raise UserError(f"tokenizer.kind: {tok_cfg.kind!r} is not one of 'sentencepiece', 'pretrained'")
    if not cache_dir:
        with tempfile.TemporaryDirectory() as tmp:
            _build_sentencepiece(tok_cfg, raw, Path(tmp))
            return load_pretrained(tmp)
    final = Path(cache_dir) / "tokenizer" / f"sp-{cache_key(tok_cfg, raw)}"
    if not (final / "tokenizer.json").is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            _build_sentencepiece(tok_cfg, raw, tmp)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_pretrained(final)


def load_pretrained(path: str | Path, field: str = "tokenizer.path") -> PreTrainedTokenizerBase:
    """Local directory only: the cluster nodes have no internet. `field` names the setting in errors."""
    p = check_model_dir(path, field, weights=False, tokenizer=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"{field}: cannot load a tokenizer from {p}: {str(err).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        raise UserError(f"{field}: tokenizer in {p} has no pad token")
    return tok
