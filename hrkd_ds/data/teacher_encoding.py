"""The teacher's own encoding of the same rows (`teacher.tokenizer`): cross-tokenizer distillation.

For sequence classification the teacher's class logits do not depend on how the student splits
the text, so each model reads the raw text with its own tokenizer. Both encodings come from one
RawSplits, row for row, so the sampler's indices address the same example in each; the collate
puts the teacher's rows under `teacher_*` keys (data/collate.py) and the distill step feeds them
to the teacher (distill/step.py). Cached like the student's, under the teacher tokenizer's key.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from hrkd_ds.data.multidomain import TokenizedSplits, tokenize_splits
from hrkd_ds.data.splits import RawSplits
from hrkd_ds.data.tokenizer import load_pretrained

FIELD = "teacher.tokenizer"


@dataclass
class TeacherEncoding:
    """The teacher's tokenizer and its tokenized splits (same domains, rows and order as the student's)."""

    tokenizer: PreTrainedTokenizerBase
    data: TokenizedSplits

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id


def encode_for_teacher(path: str, raw: RawSplits, max_seq_len: int, cache_dir: str) -> TeacherEncoding | None:
    """None when `teacher.tokenizer` is unset (the teacher reads the student's ids, as before);
    a missing or unloadable directory is one line naming the field (UserError)."""
    if not path:
        return None
    tokenizer = load_pretrained(path, FIELD)
    return TeacherEncoding(tokenizer, tokenize_splits(raw, tokenizer, max_seq_len, cache_dir))
