"""Loading exported models: whole (`load_exported`), or straight into ZeRO-3 partitions.

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

import math
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # noqa: F401  imported before zero.Init: its import-time checks fail while zero.Init patches Tensor.__new__
import deepspeed
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.initialization import no_init_weights

from hrkd_ds.errors import UserError
from hrkd_ds.models.attention import register_attention
from hrkd_ds.models.encoder import MultiDomainClassifier


def load_exported(path: str | Path, attention: str) -> MultiDomainClassifier:
    """A model exported by a previous stage (or any HF dir with the hrkd label layout), whole."""
    hf = AutoModelForSequenceClassification.from_pretrained(str(path), attn_implementation=register_attention(),
                                                            use_safetensors=True)
    return MultiDomainClassifier(hf, attention=attention)


def _state_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"teacher at {path}: no *.safetensors weights to load partitioned")
    return files


def load_partitioned(path: str | Path, ds_cfg: dict[str, Any], attention: str):
    """A MultiDomainClassifier whose parameters are ZeRO-3 partitions, weights from `path`."""
    path = Path(path)
    config = AutoConfig.from_pretrained(str(path))
    with deepspeed.zero.Init(config_dict_or_path=ds_cfg), no_init_weights():
        hf = AutoModelForSequenceClassification.from_config(config, attn_implementation=register_attention())
    handles = [safe_open(str(f), framework="pt") for f in _state_files(path)]
    where = {key: h for h in handles for key in h.keys()}
    named = dict(hf.named_parameters())
    missing = sorted(set(named) - set(where))
    if missing:
        raise UserError(f"teacher at {path}: weights missing for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    with torch.no_grad():
        for name, param in named.items():
            if getattr(param, "ds_secondary_tensor", None) is not None:  # ZeRO++ hpZ keeps a second copy: let DeepSpeed fill both
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                    if _rank(param) == 0:
                        param.copy_(where[name].get_tensor(name).to(param.dtype))
                continue
            _fill_partition(param, where[name], name, path)
        for name, buf in hf.named_buffers():
            if name in where:
                buf.copy_(where[name].get_tensor(name).to(buf.dtype))
    return MultiDomainClassifier(hf, attention=attention)


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
