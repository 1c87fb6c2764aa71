"""Typed experiment configuration: dataclasses loaded from YAML plus `key.sub=value` overrides.

Validated once, here at the edge: an unknown key, a wrong type or an out-of-range value raises
`UserError` naming the field and the bad value, so the rest of the code can trust the config.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hrkd_ds.errors import UserError


@dataclass
class DataConfig:
    """Where the multi-domain data comes from and how it is split."""

    format: str = "amazon"  # amazon | mnli | table
    path: str = ""  # "" -> the shipped Amazon sample
    test_path: str = ""  # mnli: dev-matched file used as the test split; table: optional test file
    domains: list[str] = field(default_factory=list)  # [] -> every domain found, sorted
    labels: list[str] = field(default_factory=list)  # [] -> the format's fixed label order
    text_column: str = "text"  # table format only
    text_pair_column: str = ""  # table format only; "" -> single-sentence task
    label_column: str = "label"  # table format only
    domain_column: str = "domain"  # table format only
    max_seq_len: int = 128
    train_fraction: float = 1.0  # few-shot: fraction of each domain's training data kept
    dev_fraction: float = 0.09  # amazon/table: share of each domain held out for dev
    test_fraction: float = 0.10  # amazon/table: share of each domain held out for test
    split_seed: int = 42
    cache_dir: str = ""  # "" -> <output_dir>/../.hrkd_cache (shared between runs)


@dataclass
class TokenizerConfig:
    """SentencePiece trained on the training text, or a pretrained tokenizer from a local dir."""

    kind: str = "sentencepiece"  # sentencepiece | pretrained
    path: str = ""  # pretrained: local directory (e.g. the teacher's)
    vocab_size: int = 2000
    model_type: str = "unigram"  # sentencepiece model type: unigram | bpe


@dataclass
class ModelConfig:
    """One encoder (teacher or student): from a local pretrained dir, or built from sizes."""

    pretrained: str = ""  # local HF directory; "" -> random init from the sizes below
    init: str = "random"  # random | pretrained | teacher_layers (student only)
    teacher_layers: list[int] = field(default_factory=list)  # init=teacher_layers: 1-based
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    dropout: float = 0.1


@dataclass
class GraphConfig:
    """Domain-relational graph and hierarchical compare-aggregate (DESIGN.md sections 1-2)."""

    enabled: bool = True  # off -> uniform 1/K domain weights (TinyBERT-KD baseline)
    hierarchical: bool = True  # compare-aggregate over the layers so far
    trainable: bool = True  # reference release leaves the graph at random init (False)
    detach_prototypes: bool = True  # reference lets gradients flow through the ratios (False)
    mask_padding: bool = True  # reference averages padding tokens into prototypes (False)
    heads: int = 8
    hidden_per_head: int = 8  # GAT width per head
    dropout: float = 0.1
    leaky_relu_slope: float = 0.2
    scale_scores: bool = True  # divide compare-aggregate bilinear scores by sqrt(D); reference: False


@dataclass
class DistillConfig:
    """Which distillation method and which layer-wise terms."""

    method: str = "hrkd"  # hrkd | kd | none
    layer_map: list[int] = field(default_factory=list)  # [] -> uniform; teacher layer per student layer (1-based)
    attention: str = "probs"  # probs (post-softmax, bounded) | scores (pre-softmax, the reference's choice)
    temperature: float = 1.0
    fused: bool = True  # fused relational loss; False -> per-domain loop reference
    teacher_deepspeed: str = "ds_configs/teacher_zero3.json"


@dataclass
class StageConfig:
    """Optimisation schedule of one training stage (teacher or distill)."""

    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: float = 3.0
    max_steps: int = 0  # >0 caps the run
    batch_per_domain: int = 8  # micro-batch per domain per rank
    epoch_policy: str = "largest"  # largest | domain | steps
    epoch_domain: str = ""  # epoch_policy=domain
    steps_per_epoch: int = 0  # epoch_policy=steps
    eval_every: int = 50
    save_every: int = 100
    log_every: int = 10


@dataclass
class TrackingConfig:
    """Weights & Biases and local logging."""

    wandb_project: str = "hrkd-ds"
    wandb_mode: str = ""  # "" -> online if a key is set, else offline; disabled in tests
    progress_bar: bool = True
    plot: bool = True


@dataclass
class Config:
    """A whole run: stages run in order, each writing under output_dir."""

    stages: list[str] = field(default_factory=lambda: ["teacher", "distill"])
    output_dir: str = "runs/default"
    seed: int = 42
    teacher_from: str = ""  # finished run dir or HF dir: skip the teacher stage's training
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    teacher: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=lambda: ModelConfig(hidden_size=64, num_layers=1, num_heads=4, intermediate_size=256))
    graph: GraphConfig = field(default_factory=GraphConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # The embedded default trains small models from scratch on the shipped sample in a few CPU
    # minutes; the paper's BERT-scale settings (lr 5e-5, 3 epochs, batch 8) are in configs/.
    teacher_train: StageConfig = field(default_factory=lambda: StageConfig(lr=2e-3, epochs=5, batch_per_domain=16))
    distill_train: StageConfig = field(default_factory=lambda: StageConfig(lr=2e-3, epochs=4, batch_per_domain=16))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("amazon", "mnli", "table"),
    "tokenizer.kind": ("sentencepiece", "pretrained"),
    "tokenizer.model_type": ("unigram", "bpe"),
    "teacher.init": ("random", "pretrained"),
    "student.init": ("random", "pretrained", "teacher_layers"),
    "distill.method": ("hrkd", "kd", "none"),
    "distill.attention": ("scores", "probs"),
    "teacher_train.epoch_policy": ("largest", "domain", "steps"),
    "distill_train.epoch_policy": ("largest", "domain", "steps"),
    "tracking.wandb_mode": ("", "online", "offline", "disabled"),
}
_STAGES = ("teacher", "distill", "eval")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, typ: Any, name: str) -> Any:
    """Check (and for CLI strings, parse) one leaf value against its annotated type."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item_t,) = typing.get_args(typ)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
            if isinstance(value, str) or not isinstance(value, list):
                value = [v for v in str(value).split(",") if v != ""]
        if not isinstance(value, list):
            raise UserError(f"config field '{name}': expected a list, got {value!r}")
        return [_coerce(v, item_t, f"{name}[{i}]") for i, v in enumerate(value)]
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, bool):
            return value
        raise UserError(f"config field '{name}': expected true/false, got {value!r}")
    if typ in (int, float):
        accepted = int if typ is int else (int, float)  # an int field takes no 1.5, a float field takes 2
        if isinstance(value, str):
            try:
                return typ(value)
            except ValueError:
                pass
        elif isinstance(value, accepted) and not isinstance(value, bool):
            return typ(value)
        raise UserError(f"config field '{name}': expected {'an integer' if typ is int else 'a number'}, got {value!r}")
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise UserError(f"config field '{name}': expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {typ} for {name}")


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested mapping into dataclass `obj`, rejecting unknown keys."""
    hints = _hints(type(obj))
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise UserError(f"unknown config key '{name}'")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise UserError(f"config field '{name}': expected a mapping, got {value!r}")
            _apply(getattr(obj, key), value, f"{name}.")
        else:
            setattr(obj, key, _coerce(value, typ, name))


def _set_dotted(cfg: Config, dotted: str, raw: str) -> None:
    """Apply one `a.b=value` override from the command line."""
    parts = dotted.split(".")
    nested: dict[str, Any] = {parts[-1]: raw}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    _apply(cfg, nested)


def _check_range(name: str, ok: bool, value: Any, what: str) -> None:
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise UserError(f"config field '{name}': {value!r} is out of range ({what})")


def validate(cfg: Config) -> Config:
    """Range and choice checks that types alone cannot express."""
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise UserError(f"config field '{dotted}': {value!r} is not one of {', '.join(repr(c) for c in choices)}")
    if not cfg.stages:
        raise UserError("config field 'stages': at least one stage is required")
    for stage in cfg.stages:
        if stage not in _STAGES:
            raise UserError(f"config field 'stages': {stage!r} is not one of {', '.join(_STAGES)}")
    d = cfg.data
    _check_range("data.max_seq_len", 8 <= d.max_seq_len <= 4096, d.max_seq_len, "8..4096")
    _check_range("data.train_fraction", 0.0 < d.train_fraction <= 1.0, d.train_fraction, "0 < x <= 1")
    _check_range("data.dev_fraction", 0.0 < d.dev_fraction < 0.5, d.dev_fraction, "0 < x < 0.5")
    _check_range("data.test_fraction", 0.0 < d.test_fraction < 0.5, d.test_fraction, "0 < x < 0.5")
    if len(set(d.domains)) != len(d.domains):
        raise UserError(f"config field 'data.domains': duplicate domain in {d.domains!r}")
    _check_range("tokenizer.vocab_size", 100 <= cfg.tokenizer.vocab_size <= 1_000_000, cfg.tokenizer.vocab_size, "100..1000000")
    if cfg.tokenizer.kind == "pretrained" and not cfg.tokenizer.path:
        raise UserError("config field 'tokenizer.path': required when tokenizer.kind is 'pretrained'")
    for role in ("teacher", "student"):
        m: ModelConfig = getattr(cfg, role)
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            value = getattr(m, key)
            _check_range(f"{role}.{key}", value >= 1, value, ">= 1")
        if not m.pretrained and m.hidden_size % m.num_heads:
            raise UserError(f"config field '{role}.num_heads': {m.num_heads} does not divide {role}.hidden_size={m.hidden_size}")
        _check_range(f"{role}.dropout", 0.0 <= m.dropout < 1.0, m.dropout, "0 <= x < 1")
        if m.init == "pretrained" and not m.pretrained:
            raise UserError(f"config field '{role}.pretrained': required when {role}.init is 'pretrained'")
        if m.pretrained and m.init == "random":
            raise UserError(f"config field '{role}.init': 'random' ignores {role}.pretrained={m.pretrained!r}; set init to 'pretrained'")
    if cfg.student.init == "teacher_layers" and not cfg.student.teacher_layers:
        raise UserError("config field 'student.teacher_layers': required when student.init is 'teacher_layers'")
    if cfg.student.init == "teacher_layers" and not cfg.distill.layer_map:
        cfg.distill.layer_map = list(cfg.student.teacher_layers)  # distil each kept layer against itself
    g = cfg.graph
    _check_range("graph.heads", g.heads >= 1, g.heads, ">= 1")
    _check_range("graph.hidden_per_head", g.hidden_per_head >= 1, g.hidden_per_head, ">= 1")
    _check_range("graph.dropout", 0.0 <= g.dropout < 1.0, g.dropout, "0 <= x < 1")
    _check_range("distill.temperature", cfg.distill.temperature > 0, cfg.distill.temperature, "> 0")
    for key in ("teacher_train", "distill_train"):
        s: StageConfig = getattr(cfg, key)
        _check_range(f"{key}.lr", s.lr > 0, s.lr, "> 0")
        _check_range(f"{key}.epochs", s.epochs > 0, s.epochs, "> 0")
        _check_range(f"{key}.max_steps", s.max_steps >= 0, s.max_steps, ">= 0")
        _check_range(f"{key}.batch_per_domain", s.batch_per_domain >= 1, s.batch_per_domain, ">= 1")
        _check_range(f"{key}.warmup_ratio", 0.0 <= s.warmup_ratio < 1.0, s.warmup_ratio, "0 <= x < 1")
        for every in ("eval_every", "save_every", "log_every"):
            value = getattr(s, every)
            _check_range(f"{key}.{every}", value >= 0, value, ">= 0 (0 = never)")
        if s.epoch_policy == "domain" and not s.epoch_domain:
            raise UserError(f"config field '{key}.epoch_domain': required when epoch_policy is 'domain'")
        if s.epoch_policy == "steps":
            _check_range(f"{key}.steps_per_epoch", s.steps_per_epoch >= 1, s.steps_per_epoch, ">= 1 when epoch_policy is 'steps'")
    return cfg


def resolve_package_path(value: str, name: str) -> str:
    """`pkg:<module>/<sub/path>` -> a directory inside an installed package (e.g. a PyPI-shipped model)."""
    if not value.startswith("pkg:"):
        return value
    module, _, sub = value[4:].partition("/")
    import importlib.util

    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"config field '{name}': package {module!r} is not installed ({value})")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise UserError(f"config field '{name}': {path} does not exist ({value})")
    return str(path)


def _resolve_paths(cfg: Config) -> None:
    cfg.teacher.pretrained = resolve_package_path(cfg.teacher.pretrained, "teacher.pretrained")
    cfg.student.pretrained = resolve_package_path(cfg.student.pretrained, "student.pretrained")
    cfg.tokenizer.path = resolve_package_path(cfg.tokenizer.path, "tokenizer.path")
    cfg.teacher_from = resolve_package_path(cfg.teacher_from, "teacher_from")


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key.sub=value` overrides, then validate."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"config file {path}{where}: not valid YAML") from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path}: top level must be a mapping")
        _apply(cfg, values)
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(cfg, key.strip(), raw)
    _resolve_paths(cfg)
    return validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain mapping for saving the resolved config with the run."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically) so a run can be reproduced."""
    from hrkd_ds.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
