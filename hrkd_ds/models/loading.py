"""Loading exported models: whole (`load_exported`), or straight into ZeRO-3 partitions.

`load_partitioned`: no rank ever holds all of the teacher. Built under `deepspeed.zero.Init`
(each parameter is partitioned as it is created; transformers'
`no_init_weights` skips the random init that would touch full tensors), then filled one
parameter at a time from the memory-mapped safetensors: rank 0 writes inside
`GatheredParameters`, which re-partitions on exit. Peak memory per rank: its partition plus one
gathered parameter.
"""

from __future__ import annotations

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
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    handles = [safe_open(str(f), framework="pt") for f in _state_files(path)]
    where = {key: h for h in handles for key in h.keys()}
    named = dict(hf.named_parameters())
    missing = sorted(set(named) - set(where))
    if missing:
        raise UserError(f"teacher at {path}: weights missing for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    with torch.no_grad():
        for name, param in named.items():
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                if rank == 0:
                    param.copy_(where[name].get_tensor(name).to(param.dtype))
        for name, buf in hf.named_buffers():
            if name in where:
                buf.copy_(where[name].get_tensor(name).to(buf.dtype))
    return MultiDomainClassifier(hf, attention=attention)
