"""Export the trained model as a Hugging Face directory, atomically, also from ZeRO-3 partitions."""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import deepspeed

from hrkd_ds.engine.distributed import DistInfo, barrier
from hrkd_ds.io import atomic_write_json, replace_dir


def make_exporter(engine, tokenizer, dist: DistInfo, extra: dict[str, Any]) -> Callable[[Path], None]:
    """A collective export of engine.module.model: every rank calls it, rank 0 writes, then an
    atomic directory swap, so a crash mid-export leaves the previous export whole."""

    def export(dest: Path) -> None:
        model = engine.module.model
        zero3 = engine.zero_optimization_partition_weights()
        gather = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None) if zero3 else nullcontext()
        with gather:
            if dist.is_main:
                tmp = dest.with_name(f".{dest.name}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                atomic_write_json(tmp / "hrkd.json", extra)
                replace_dir(tmp, dest)
        barrier()

    return export
