"""Loading exported models: the one loader of an export directory (`load_export`), or a teacher
straight into ZeRO-3 partitions (`load_partitioned`).

`load_export` is what prediction, evaluation, the compression report and distillation's teacher
all go through: it refuses a directory that is not an hrkd export with one line naming the file,
reads hrkd.json (role, max_seq_len, precision) and loads fp32 or int8 weights (models/int8.py)
into the trainer's own MultiDomainClassifier, with the trainer's attention function (the same
arithmetic as the trainer's evaluation, so no near-tie flips between the two).

`load_partitioned`: no rank ever holds or reads all of the teacher. Built under
`deepspeed.zero.Init` (each parameter is partitioned as it is created; transformers'
`no_init_weights` skips the random init that would touch full tensors), then every rank fills its
own partitions straight from the memory-mapped safetensors: partition r of a parameter is the
flat range [r * P, (r + 1) * P) of the flattened tensor (DeepSpeed's layout, P = the partition
size), so the rank reads only the rows that cover that range (`get_slice`). No gather, no
collective, and about 1/N of the file paged in per rank; peak memory per rank is its partition
plus one parameter's rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # noqa: F401  imported before zero.Init: its import-time checks fail while zero.Init patches Tensor.__new__
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from transformers.initialization import no_init_weights

from hrkd_ds.config.deepspeed import zero_stage
from hrkd_ds.errors import UserError
from hrkd_ds.models.attention import register_attention
from hrkd_ds.models.encoder import MultiDomainClassifier
from hrkd_ds.models.int8 import INT8_WEIGHTS, load_int8_into, quantize_linears

PRECISIONS = ("fp32", "int8")


@dataclass
class Export:
    """An exported model directory, loaded: the model, its tokenizer and what hrkd.json records."""

    model: MultiDomainClassifier
    tokenizer: PreTrainedTokenizerBase | None
    domains: list[str]
    labels: list[str]
    max_seq_len: int | None  # recorded in hrkd.json by the exporter, if it did
    precision: str  # "fp32" | "int8"
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def max_positions(self) -> int:
        return self.model.config.max_position_embeddings

    def domain_logits(self, batch: dict[str, torch.Tensor], domain_ids: torch.Tensor) -> torch.Tensor:
        """(N, C): each row's own domain slice (the trainer's forward, packed rows and all)."""
        return self.model(**batch, domain_ids=domain_ids).logits


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def read_export_config(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """(HF config, hrkd.json) of an export, or one UserError line saying why it is not one."""
    model_dir = Path(model_dir)
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
    meta_file = model_dir / "hrkd.json"
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except json.JSONDecodeError as err:
        raise UserError(f"{meta_file}: not valid JSON ({err.msg})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_file}: not a JSON object")
    return config, meta


def stored_precision(model_dir: str | Path, meta: dict[str, Any]) -> str:
    """What the directory holds: int8 when hrkd.json says so (and its weights are there), else fp32."""
    precision = meta.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise UserError(f"{Path(model_dir) / 'hrkd.json'}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8" and not (Path(model_dir) / INT8_WEIGHTS).is_file():
        raise UserError(f"{model_dir}: hrkd.json says int8 but {INT8_WEIGHTS} is missing")
    return precision


def _load_hf(model_dir: Path, config, stored: str):
    impl = register_attention()
    if stored == "int8":
        with no_init_weights():
            hf = AutoModelForSequenceClassification.from_config(config, attn_implementation=impl)
        return load_int8_into(hf, model_dir)
    return AutoModelForSequenceClassification.from_pretrained(str(model_dir), config=config, local_files_only=True,
                                                              attn_implementation=impl, use_safetensors=True)


def load_export(model_dir: str | Path, *, attention: str = "probs", precision: str | None = None,
                tokenizer: bool = True) -> Export:
    """An hrkd export, whole, in eval mode. `precision` None: what the directory holds; "int8" on
    an fp32 export quantizes it in memory (what `export_int8` writes); "fp32" of an int8 export
    is refused (the fp32 weights are not in it)."""
    model_dir = Path(model_dir)
    config, meta = read_export_config(model_dir)
    stored = stored_precision(model_dir, meta)
    wanted = precision or stored
    if wanted not in PRECISIONS:
        raise UserError(f"precision {wanted!r} is not one of {', '.join(PRECISIONS)}")
    if stored == "int8" and wanted == "fp32":
        raise UserError(f"{model_dir}: holds an int8 export; pass the fp32 directory (RUN/student/model) for precision fp32")
    try:
        hf = _load_hf(model_dir, config, stored)
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True) if tokenizer else None
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{model_dir}: cannot load the model or its tokenizer: {_first_line(err)}") from None
    if tok is not None and tok.pad_token_id is None:
        raise UserError(f"{model_dir}: the tokenizer has no pad token")
    if wanted == "int8" and stored == "fp32":
        hf = quantize_linears(hf)
    return Export(MultiDomainClassifier(hf, attention=attention).eval(), tok, list(config.hrkd_domains),
                  list(config.hrkd_labels), meta.get("max_seq_len"), wanted, model_dir, meta)


def load_exported(path: str | Path, attention: str) -> MultiDomainClassifier:
    """The model of an export (`load_export` without the tokenizer): teacher, eval and layer sources."""
    return load_export(path, attention=attention, tokenizer=False).model


def _state_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"teacher at {path}: no *.safetensors weights to load partitioned")
    return files


def partitions_teacher(ds_cfg: dict[str, Any], world_size: int) -> bool:
    """Whether the general, eval and layer-source paths load a teacher-sized model into partitions:
    under a ZeRO-3 teacher config with more than one rank (one rank's partition is the whole model,
    so a single process keeps its plain, unchanged path)."""
    return zero_stage(ds_cfg) == 3 and world_size > 1


def load_partitioned(path: str | Path, ds_cfg: dict[str, Any], attention: str, config=None):
    """A MultiDomainClassifier whose parameters are ZeRO-3 partitions, weights from `path`.

    `config` (default: `path`'s config.json) is the HF config to build: the general stage passes
    a pretrained encoder's config with the run's K*C head, whose task head the encoder's weights
    lack (it is initialised fresh, as `from_pretrained` would) and whose keys may lack the base
    model prefix (a bare `BertModel` checkpoint)."""
    import deepspeed  # here, not at import: prediction and the export tools never need it

    path = Path(path)
    fresh_head = config is not None
    config = config if config is not None else AutoConfig.from_pretrained(str(path))
    with deepspeed.zero.Init(config_dict_or_path=ds_cfg), no_init_weights():
        hf = AutoModelForSequenceClassification.from_config(config, attn_implementation=register_attention())
    handles = [safe_open(str(f), framework="pt") for f in _state_files(path)]
    where = {key: h for h in handles for key in h.keys()}
    prefix = hf.base_model_prefix + "."
    keys = {name: _weight_key(name, where, prefix) for name, _ in hf.named_parameters()}
    named = {name: p for name, p in hf.named_parameters() if keys[name] is not None}
    missing = sorted(n for n, k in keys.items() if k is None and not (fresh_head and not n.startswith(prefix)))
    if missing:
        raise UserError(f"teacher at {path}: weights missing for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    with torch.no_grad():
        for name, param in named.items():
            key = keys[name]
            if getattr(param, "ds_secondary_tensor", None) is not None:  # ZeRO++ hpZ keeps a second copy: let DeepSpeed fill both
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                    if _rank(param) == 0:
                        param.copy_(where[key].get_tensor(key).to(param.dtype))
                continue
            _fill_partition(param, where[key], key, path)
        _init_head([p for n, p in hf.named_parameters() if keys[n] is None], config.initializer_range)
        for name, buf in hf.named_buffers():
            key = _weight_key(name, where, prefix)
            if key is not None:
                buf.copy_(where[key].get_tensor(key).to(buf.dtype))
    return MultiDomainClassifier(hf, attention=attention)


def load_layer_source(path: str | Path, ds_cfg: dict[str, Any], attention: str, world_size: int) -> MultiDomainClassifier:
    """The teacher a `teacher_layers`/`teacher_select` student is copied from: into partitions
    when `partitions_teacher` (models/student_init gathers it a layer at a time), else whole."""
    return load_partitioned(path, ds_cfg, attention) if partitions_teacher(ds_cfg, world_size) else load_exported(path, attention)


def _weight_key(name: str, where: dict, prefix: str) -> str | None:
    """The checkpoint key of parameter `name`: itself, or without the base model prefix."""
    if name in where:
        return name
    bare = name[len(prefix):] if name.startswith(prefix) else None
    return bare if bare in where else None


def _init_head(params: list, std: float) -> None:
    """A fresh task head (the only parameters a pretrained encoder's checkpoint lacks), filled
    once on rank 0 and re-partitioned: weights N(0, std), biases 0, as transformers initialises it."""
    if not params:
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        if _rank(params[0]) == 0:
            for p in params:
                p.normal_(0.0, std) if p.dim() > 1 else p.zero_()


def _rank(param: torch.Tensor) -> int:
    return torch.distributed.get_rank(group=param.ds_process_group) if torch.distributed.is_initialized() else 0


def _fill_partition(param: torch.Tensor, handle, name: str, path: Path) -> None:
    """Copy this rank's flat range of `name` into param.ds_tensor, reading only the rows covering it."""
    part = param.ds_tensor
    size = part.ds_numel
    rank = _rank(param)
    sliced = handle.get_slice(name)
    shape = tuple(sliced.get_shape())
    if shape != tuple(param.ds_shape):
        raise UserError(f"teacher at {path}: {name} has shape {list(shape)} in the weights, {list(param.ds_shape)} in config.json")
    start, stop = size * rank, min(size * (rank + 1), param.ds_numel)
    part[max(stop - start, 0):].zero_()  # the last rank's tail is padding
    if start >= stop:
        return
    if len(shape) == 0:
        part[0] = sliced[...].to(part.dtype)
        return
    row = math.prod(shape[1:])
    lo, hi = start // row, -(-stop // row)
    rows = sliced[lo:hi].reshape(-1)
    part[: stop - start].copy_(rows[start - lo * row: stop - lo * row].to(part.dtype))
