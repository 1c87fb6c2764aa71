"""load_partitioned's per-rank read: the partitions every rank fills from the safetensors, laid end
to end, are the flattened tensor (DeepSpeed's flat layout), also where partition boundaries fall
inside rows; and a shape that disagrees with the config is one clear error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hrkd_ds.errors import UserError
from hrkd_ds.models import loading


def _param(shape: tuple[int, ...], world: int, dtype=torch.float32) -> SimpleNamespace:
    numel = int(torch.Size(shape).numel())
    size = -(-numel // world)  # DeepSpeed: aligned size // world
    part = torch.full((size,), float("nan"), dtype=dtype)
    part.ds_numel = size
    return SimpleNamespace(ds_tensor=part, ds_numel=numel, ds_shape=torch.Size(shape), ds_process_group=None)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(7, 5), (11,), (3, 4, 5), (2, 3)], ids=str)
def test_partitions_laid_end_to_end_are_the_flat_tensor(tmp_path, monkeypatch, world, shape):
    full = torch.arange(int(torch.Size(shape).numel()), dtype=torch.float32).reshape(shape) + 1
    save_file({"w": full}, str(tmp_path / "m.safetensors"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    parts = []
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as handle:
        for rank in range(world):
            monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, r=rank: r)
            p = _param(shape, world, torch.bfloat16 if world == 3 else torch.float32)
            loading._fill_partition(p, handle, "w", tmp_path)
            parts.append(p.ds_tensor.float())
    flat = torch.cat(parts)
    assert torch.equal(flat[: full.numel()], full.reshape(-1))
    assert (flat[full.numel():] == 0).all()  # padding of the last rank(s)


def test_shape_mismatch_is_a_user_error(tmp_path):
    save_file({"w": torch.zeros(4, 3)}, str(tmp_path / "m.safetensors"))
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as handle:
        with pytest.raises(UserError, match=r"w has shape \[4, 3\] in the weights, \[3, 4\] in config.json"):
            loading._fill_partition(_param((3, 4), 1), handle, "w", tmp_path)
