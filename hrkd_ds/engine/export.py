"""Export the trained model as a Hugging Face directory, atomically, also from ZeRO-3 partitions;
and its int8 variant beside it (`export_int8`)."""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import deepspeed

from hrkd_ds.engine.distributed import DistInfo, barrier
from hrkd_ds.errors import UserError
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


def export_int8(src: str | Path, dest: str | Path) -> Path:
    """Write the int8 variant of the fp32 export `src` to `dest` (e.g. student/model-int8):
    config, tokenizer, int8 weights (models/int8.py) and hrkd.json with `precision: int8`,
    built in a temp directory and swapped in whole."""
    from hrkd_ds.models.int8 import save_int8
    from hrkd_ds.models.loading import load_export

    src, dest = Path(src), Path(dest)
    export = load_export(src, precision="int8")
    if export.meta.get("precision") == "int8":
        raise UserError(f"{src}: already an int8 export")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf = export.model.hf_model
    hf.config.save_pretrained(tmp)
    export.tokenizer.save_pretrained(tmp)
    save_int8(hf, tmp)
    atomic_write_json(tmp / "hrkd.json", {**export.meta, "precision": "int8",
                                          "quantization": "dynamic int8 nn.Linear, per-channel weights (torch.ao)",
                                          "source": f"../{src.name}" if src.parent == dest.parent else str(src)})
    replace_dir(tmp, dest)
    return dest
