"""The typed experiment configuration: one dataclass per YAML section.

Each choice is declared once, as a `Literal` type (or a tuple the `Literal` is made of, where code
elsewhere needs the list, e.g. the stages' order); the loader (`loader.py`) rejects any other value.
Lists that live with the code that implements them (distill.method: distill/methods.py; data.format:
data/splits.py) are tested equal to these (tests/test_choices.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

STAGES = ("general", "teacher", "distill", "eval")  # a run's stages, in the order they run
FROM_TEACHER = ("teacher_layers", "teacher_select")  # student inits that copy or select teacher weights
STUDENT_INITS = (*FROM_TEACHER, "general")  # inits only a student can have
ROLE_OF_STAGE = {"teacher": "teacher", "general": "general", "distill": "student"}  # training stage -> its run's role
SCHEDULE_OF_ROLE = {"teacher": "teacher_train", "student": "distill_train", "general": "general_train"}  # role -> its schedule
PAD_TO = ("longest", "max_length")  # data.pad_to: pad each batch to its longest row, or to data.max_seq_len


@dataclass
class DataConfig:
    """Where the multi-domain data comes from and how it is split."""

    format: Literal["amazon", "mnli", "table"] = "amazon"
    path: str = ""  # "" -> the shipped Amazon sample
    test_path: str = ""  # mnli: dev-matched file used as the test split; table: optional test file
    domains: list[str] = field(default_factory=list)  # [] -> every domain found, sorted
    labels: list[str] = field(default_factory=list)  # [] -> the format's fixed label order
    text_column: str = "text"  # table format only
    text_pair_column: str = ""  # table format only; "" -> single-sentence task
    label_column: str = "label"  # table format only
    domain_column: str = "domain"  # table format only
    max_seq_len: int = 128
    # episode padding: the episode's longest row, or every row to max_seq_len (the reference's)
    pad_to: Literal[PAD_TO] = "longest"
    train_fraction: float = 1.0  # few-shot: fraction of each domain's training data kept
    dev_fraction: float = 0.09  # amazon/table: share of each domain held out for dev
    test_fraction: float = 0.10  # amazon/table: share of each domain held out for test
    split_seed: int = 42
    cache_dir: str = ""  # "" -> <output_dir>/../.hrkd_cache (shared between runs)


@dataclass
class TokenizerConfig:
    """SentencePiece trained on the training text, or a pretrained tokenizer from a local dir."""

    kind: Literal["sentencepiece", "pretrained"] = "sentencepiece"
    path: str = ""  # pretrained: local directory (e.g. the teacher's)
    vocab_size: int = 2000
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece model type


@dataclass
class ModelConfig:
    """One encoder (teacher or student): from a local pretrained dir, or built from sizes."""

    pretrained: str = ""  # local HF directory; "" -> random init from the sizes below
    # teacher_layers, teacher_select, general: student only; general = this run's general-distillation
    # export; teacher_select = a narrower student whose weights are selected from teacher layers
    init: Literal[("random", "pretrained", *STUDENT_INITS)] = "random"
    teacher_layers: list[int] = field(default_factory=list)  # init=teacher_layers/teacher_select: 1-based
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    dropout: float = 0.1

    @property
    def from_teacher(self) -> bool:
        """Built from the teacher's weights (its layers, or weights selected from them)."""
        return self.init in FROM_TEACHER


@dataclass
class TeacherConfig(ModelConfig):
    """The teacher's encoder, plus the tokenizer it reads the text with."""

    # "" -> the run's tokenizer (tokenizer.*); a local directory -> the teacher encodes the raw text
    # with that tokenizer, the student with the run's (a teacher export holds its own). Logit-level
    # terms only: token positions do not correspond across tokenizers (docs/METHOD.md, "Cross-tokenizer")
    tokenizer: str = ""


@dataclass
class StudentConfig(ModelConfig):
    """The student's encoder, plus where the general stage starts it."""

    # selected teacher weights (the layers of teacher_layers, else of distill.layer_map), or random;
    # from either, the grid's narrow student did not learn the task after its general stage
    # (docs/RESULTS.md, "Status"); the selected weights at least start with input-dependent states
    general_init: Literal["teacher_select", "random"] = "teacher_select"


@dataclass
class GraphConfig:
    """Domain-relational graph and hierarchical compare-aggregate (docs/METHOD.md)."""

    enabled: bool = True  # off -> uniform 1/K domain weights (TinyBERT-KD baseline)
    hierarchical: bool = True  # compare-aggregate over the layers so far
    trainable: bool = True  # reference release leaves the graph at random init (False)
    detach_prototypes: bool = True  # reference lets gradients flow through the ratios (False)
    mask_padding: bool = True  # reference averages padding tokens into prototypes (False)
    heads: int = 8
    hidden_per_head: int = 8  # GAT width per head; 0 -> the prototype width (the reference's)
    # the paper's and the release's 0.1 only adds noise to weights that stay at 1/K, and cost dev
    # accuracy on the real teacher (docs/RESULTS.md, "Status"): off by default
    dropout: float = 0.0
    leaky_relu_slope: float = 0.2
    residual: bool = False  # add each node's own projection in the GAT layers (the release: no; see graph.py)
    # the graph attention (distill/graph.py): `gat` (the release's; static, so on the complete domain
    # graph the weights sit at 1/K whenever a level's scores share a sign) | `gatv2` (dynamic: the
    # LeakyReLU before the attention vector, distinct prototypes give distinct weights). The default
    # stays `gat` until dev evidence (issue 29): gatv2 under objective=loss collapses as residual did
    attention: Literal["gat", "gatv2"] = "gat"
    # what the graph's parameters are trained on (distill/graph_objective.py): `loss` (the paper's)
    # minimises the sum it weights, whose optimum is all weight on the smallest term; `robust`
    # maximises it plus robust_temperature x (mean term) x entropy, a soft lean towards the domains
    # the student matches worst. `robust` needs residual (else the weights cannot leave 1/K);
    # `meta` (distill/graph_meta.py) weights each (level, domain) by how well its distillation
    # gradient aligns with a held-out batch's label gradient (needs gatv2 or residual)
    objective: Literal["loss", "robust", "meta"] = "loss"
    robust_temperature: float = 1.0
    # objective=meta: the last meta_rows rows of each domain's block in every episode are the held-out
    # rows (a slice of the training data), the alignment is re-measured every meta_every steps, by a
    # central difference of relative step meta_step along the held-out gradient
    meta_rows: int = 2
    meta_every: int = 1
    meta_step: float = 1e-3
    scale_scores: bool = True  # divide compare-aggregate bilinear scores by sqrt(D); reference: False
    init: Literal["ours", "reference"] = "ours"  # Xavier bounds of U, V and the GAT (docs/METHOD.md)


@dataclass
class TermConfig:
    """One loss term's setting under `distill.terms.<name>` (the names: distill/loss_terms/)."""

    weight: float = 1.0  # w_t in the total (docs/METHOD.md, "Total loss"); 0 turns the term off


@dataclass
class DistillConfig:
    """Which distillation method and which layer-wise terms."""

    method: Literal["hrkd", "kd", "logit-kd", "two-stage", "none"] = "hrkd"  # see distill/methods.py
    layer_map: list[int] = field(default_factory=list)  # [] -> uniform; teacher layer per student layer (1-based)
    attention: Literal["probs", "scores"] = "probs"  # post-softmax (bounded) | pre-softmax (the reference's)
    temperature: float = 1.0  # tau of the soft targets (pred, kl)
    two_stage_split: float = 0.5  # two-stage: share of the stage's steps on the layer-wise terms, before pred
    # per-term weights over the registered terms' defaults (emb, att, hid, pred: 1; ce, the labels'
    # cross-entropy, which HRKD and TinyBERT do not use: 0), e.g. distill.terms.ce.weight=1
    terms: dict[str, TermConfig] = field(default_factory=dict)
    # MSE denominators: real tokens / real (query, key) pairs, or every element as the reference
    normalization: Literal["masked", "reference"] = "masked"
    fused: bool = True  # fused relational loss; False -> per-domain loop reference
    teacher_deepspeed: str = "ds_configs/teacher_zero3.json"
    compiled_terms: bool = False  # CPU: the big MSE terms through torch.compile (pays with static shapes)
    # the general stage's embedding/hidden MSEs leave out position 0 ([CLS]), which the task heads
    # read, so a mean-pooled teacher's constant [CLS] is not copied. Measured: the narrow student's
    # states collapse without it too, mean-pooled ones included (docs/RESULTS.md, "Status")
    general_skip_cls: bool = False


@dataclass
class TransferConfig:
    """The distill stage's teacher-labelled transfer set and its teacher targets (docs/METHOD.md,
    "Transfer set and cached teacher targets"); the teacher stage and `none` never see it."""

    augment_factor: int = 0  # augmented copies per training example; 0: the labelled rows only
    seed: int = 0  # the augmentation's own seed (not the run's): every seed and method reuses one set
    replace_prob: float = 0.4  # per token: a nearest neighbour in the teacher's input embeddings (TinyBERT's p_t)
    neighbours: int = 15  # the k nearest tokens (cosine) a replacement is drawn from (TinyBERT's K)
    mask_prob: float = 0.1  # per copy: one span replaced by the mask token (deleted when there is none)
    delete_prob: float = 0.1  # per copy: one span deleted
    max_span: int = 3  # span length drawn from 1..max_span
    # online: the teacher forward in every step; cached: the teacher's logits computed once, stored
    # under the data cache; used when every active term reads only the logits (else online)
    teacher_targets: Literal["online", "cached"] = "online"


@dataclass
class StageConfig:
    """Optimisation schedule of one training stage (teacher or distill)."""

    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: float = 3.0
    max_steps: int = 0  # >0 caps the run
    batch_per_domain: int = 8  # micro-batch per domain per rank
    epoch_policy: Literal["largest", "domain", "steps"] = "largest"
    epoch_domain: str = ""  # epoch_policy=domain
    steps_per_epoch: int = 0  # epoch_policy=steps
    eval_every: int = 50
    save_every: int = 100
    log_every: int = 10


@dataclass
class TrainConfig:
    """What a training stage does when the loss turns non-finite (docs/RELIABILITY.md)."""

    nonfinite: Literal["skip", "stop"] = "skip"  # skip the step (every rank) or stop the run
    max_nonfinite_steps: int = 5  # consecutive skipped steps before the run stops anyway
    # a collective (any rank's) gives up after this many seconds: a hung rank stops the job (exit 5)
    collective_timeout_s: float = 300.0
    # CPU memory (allocator.py): glibc mmaps blocks of >= this many KiB (0: its dynamic default),
    # and its heap's free pages go back to the system every malloc_trim_every steps (0: never)
    malloc_mmap_threshold_kib: int = 0
    malloc_trim_every: int = 10


@dataclass
class TrackingConfig:
    """Weights & Biases and local logging."""

    wandb_project: str = "hrkd-ds"
    wandb_mode: Literal["", "online", "offline", "disabled"] = ""  # "" -> online if a key is set, else offline
    progress_bar: bool = True
    plot: bool = True  # report.md with PNG plots at the end of each stage
    compression: bool = True  # time the student against the teacher on CPU after distillation


@dataclass
class Config:
    """A whole run: stages run in order, each writing under output_dir."""

    stages: list[Literal[STAGES]] = field(default_factory=lambda: ["teacher", "distill"])
    output_dir: str = "runs/default"
    seed: int = 42
    teacher_from: str = ""  # finished run dir or HF dir: skip the teacher stage's training
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=lambda: StudentConfig(hidden_size=64, num_layers=1, num_heads=4, intermediate_size=256))
    graph: GraphConfig = field(default_factory=GraphConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    # The embedded default trains small models from scratch on the shipped sample in a few CPU
    # minutes; the paper's BERT-scale settings (lr 5e-5, 3 epochs, batch 8) are in configs/.
    teacher_train: StageConfig = field(default_factory=lambda: StageConfig(lr=2e-3, epochs=5, batch_per_domain=16))
    distill_train: StageConfig = field(default_factory=lambda: StageConfig(lr=2e-3, epochs=4, batch_per_domain=16))
    # task-agnostic distillation of the pretrained teacher into the student (stage `general`)
    general_train: StageConfig = field(default_factory=lambda: StageConfig(lr=1e-3, epochs=1, batch_per_domain=16))
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
