"""Cross-tokenizer distillation (teacher.tokenizer): the teacher's own encoding of the same rows rides
in each batch and is what the teacher reads; logit-level terms pass, token-level ones are one line;
a missing or broken tokenizer directory is one line naming the field."""

from __future__ import annotations

import pytest
import torch

from hrkd_ds.config import DataConfig, DistillConfig, GraphConfig, ModelConfig, TermConfig, TokenizerConfig, load_config
from hrkd_ds.data import build_tokenizer, load_splits
from hrkd_ds.data.collate import collate_episode
from hrkd_ds.data.multidomain import tokenize_splits
from hrkd_ds.data.teacher_encoding import encode_for_teacher
from hrkd_ds.distill.methods import METHODS, build_step_module, term_weights
from hrkd_ds.distill.step import teacher_inputs
from hrkd_ds.distill.term_registry import refuse_token_level
from hrkd_ds.errors import UserError
from hrkd_ds.models.build import build_model

T = 32
EPISODE = [[3, 0], [1, 2], [0, 9], [60, 61]]


@pytest.fixture(scope="module")
def two_encodings(tmp_path_factory):
    """The sample encoded by two different SentencePiece tokenizers (the 'teacher's' from an export dir)."""
    cache = tmp_path_factory.mktemp("xtok_cache")
    raw = load_splits(DataConfig(train_fraction=0.2))
    student_tok = build_tokenizer(TokenizerConfig(vocab_size=400), raw, str(cache))
    teacher_dir = tmp_path_factory.mktemp("teacher_tok")
    build_tokenizer(TokenizerConfig(vocab_size=700, model_type="bpe"), raw, "").save_pretrained(teacher_dir)
    student = tokenize_splits(raw, student_tok, T, str(cache))
    teacher = encode_for_teacher(str(teacher_dir), raw, T, str(cache))
    return raw, student, student_tok, teacher


def _train(data):
    return [data.splits["train"][d] for d in data.domains]


def test_the_batch_carries_the_teachers_own_encoding_of_the_same_rows(two_encodings):
    raw, student, student_tok, teacher = two_encodings
    assert teacher.data.train_sizes == student.train_sizes and teacher.data.domains == student.domains
    batch = collate_episode(_train(student), EPISODE, student_tok.pad_token_id, teacher=(_train(teacher.data), teacher.pad_id))
    for k, (d, i) in enumerate((d, i) for d, rows in enumerate(EPISODE) for i in rows):
        text = raw.splits["train"][raw.domains[d]]["text"][i]
        own = teacher.tokenizer(text, truncation=True, max_length=T)["input_ids"]
        n = int(batch["teacher_attention_mask"][k].sum())
        assert batch["teacher_input_ids"][k, :n].tolist() == own
        assert int(batch["attention_mask"][k].sum()) == len(student_tok(text, truncation=True, max_length=T)["input_ids"])
    assert not torch.equal(batch["teacher_input_ids"][:, :8], batch["input_ids"][:, :8])  # really another tokenisation
    picked = teacher_inputs(batch)
    assert picked["input_ids"] is batch["teacher_input_ids"] and picked["domain_ids"] is batch["domain_ids"]
    plain = collate_episode(_train(student), EPISODE, student_tok.pad_token_id)
    assert teacher_inputs(plain)["input_ids"] is plain["input_ids"]  # no teacher.tokenizer: the student's ids, as before


class Recording(torch.nn.Module):
    """A teacher that keeps what it was fed and returns the real teacher's output."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, **inputs):
        self.seen.append(inputs["input_ids"])
        return self.model(**inputs)


def test_the_distill_step_feeds_the_teacher_its_own_ids_and_the_logit_terms_run(two_encodings):
    _, student_data, student_tok, teacher_enc = two_encodings
    K, C = len(student_data.domains), len(student_data.labels)
    torch.manual_seed(0)
    small = dict(num_heads=2, intermediate_size=32, dropout=0.0)
    teacher = build_model(ModelConfig(hidden_size=32, num_layers=2, **small), K, C, len(teacher_enc.tokenizer),
                          teacher_enc.pad_id, T, attention="probs").eval()
    student = build_model(ModelConfig(hidden_size=16, num_layers=1, **small), K, C, len(student_tok), student_tok.pad_token_id,
                          T, attention="probs")
    module = build_step_module("logit-kd", student, teacher, K, GraphConfig(), DistillConfig(method="logit-kd"))
    recording = Recording(teacher)
    batch = collate_episode(_train(student_data), EPISODE, student_tok.pad_token_id,
                            teacher=(_train(teacher_enc.data), teacher_enc.pad_id))
    out = module(batch, teacher=recording)
    assert torch.equal(recording.seen[0], batch["teacher_input_ids"])
    assert set(out.logs) >= {"kl", "ce"} and torch.isfinite(out.loss)
    with torch.no_grad():  # the kl term read the teacher's logits on its own encoding
        own = teacher(**teacher_inputs(batch)).logits
    assert not torch.allclose(own, teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           token_type_ids=batch["token_type_ids"], domain_ids=batch["domain_ids"]).logits)


def test_logit_terms_cross_tokenizers_token_level_terms_are_one_line():
    for name in ("logit-kd",):
        spec = METHODS[name]
        refuse_token_level(term_weights(spec, DistillConfig(method=name)), spec.prediction, name)
    off = DistillConfig(method="kd", terms={k: TermConfig(0.0) for k in ("emb", "att", "hid")})
    refuse_token_level(term_weights(METHODS["kd"], off), True, "kd")  # pred alone: logit-level, soft CE
    for name in ("hrkd", "kd", "two-stage"):
        spec = METHODS[name]
        with pytest.raises(UserError) as err:
            refuse_token_level(term_weights(spec, DistillConfig(method=name)), spec.prediction, name)
        line = str(err.value)
        assert "\n" not in line and line.startswith("config field 'teacher.tokenizer'")
        assert "(emb, att, hid)" in line and "distill.method=logit-kd" in line
    only_att = DistillConfig(method="logit-kd", terms={"att": TermConfig(1.0)})
    with pytest.raises(UserError, match=r"\(att\).*distill.terms.att.weight=0"):
        refuse_token_level(term_weights(METHODS["logit-kd"], only_att), True, "logit-kd")


@pytest.mark.parametrize("extra, says", [
    ([], "needs teacher_from"),
    (["teacher_from=/t", "stages=[general]", "teacher.init=pretrained", "teacher.pretrained=/p"], "stage general"),
    (["teacher_from=/t", "stages=[distill]", "student.init=teacher_layers", "student.teacher_layers=[1]"], "student.init=teacher_layers"),
    (["teacher_from=/t", "stages=[distill]", "transfer.augment_factor=2"], "transfer.augment_factor"),
])
def test_settings_that_would_feed_one_model_the_others_ids_are_refused(extra, says):
    with pytest.raises(UserError, match=r"^config field 'teacher.tokenizer': .*" + says.replace("[", r"\[")):
        load_config(None, ["teacher.tokenizer=/tok", *extra])
    assert load_config(None, ["teacher.tokenizer=/tok", "teacher_from=/t", "stages=[distill]"]).teacher.tokenizer == "/tok"
    assert load_config(None, ["teacher.tokenizer=/tok", "teacher_from=/t", "stages=[distill,eval]"]).stages == ["distill", "eval"]


def test_a_missing_or_broken_teacher_tokenizer_is_one_line_naming_the_field(two_encodings, tmp_path):
    raw = two_encodings[0]
    assert encode_for_teacher("", raw, T, "") is None
    with pytest.raises(UserError, match=r"^teacher.tokenizer: directory not found"):
        encode_for_teacher(str(tmp_path / "nowhere"), raw, T, "")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^teacher.tokenizer: no tokenizer files"):
        encode_for_teacher(str(tmp_path / "empty"), raw, T, "")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match=r"^teacher.tokenizer: cannot load a tokenizer") as err:
        encode_for_teacher(str(tmp_path / "broken"), raw, T, "")
    assert "\n" not in str(err.value)
