"""Run by torchrun with 2 ranks: the frozen teacher under ZeRO-3 (optionally param offload).

    torchrun --nproc_per_node 2 tests/integration/scripts/teacher_partition.py OUT_DIR DS_JSON [DS_JSON ...]

For each DeepSpeed JSON: build a small MultiDomainClassifier (same seed on every rank), compute
its outputs on rank-local inputs without DeepSpeed, hand a deep copy to build_teacher_engine, and
compare the engine's outputs (logits, all logits, embeddings, hidden states, attention scores
with output_internals=True, under no_grad) with the unpartitioned ones. Writes
OUT_DIR/<json stem>.rank<R>.json: {"fraction", "max_abs_diff": {name: float}, "error"}.
"""

from __future__ import annotations

import copy
import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402

from hrkd_ds.config import ModelConfig  # noqa: E402
from hrkd_ds.engine.distributed import barrier, init_distributed  # noqa: E402
from hrkd_ds.config.deepspeed import read_ds_config  # noqa: E402
from hrkd_ds.engine.teacher import build_teacher_engine, partition_fraction, teacher_ds_config  # noqa: E402
from hrkd_ds.models.build import build_model  # noqa: E402
from hrkd_ds.models.loading import load_partitioned  # noqa: E402

DOMAINS, LABELS = ["a", "b", "c"], ["neg", "pos"]
VOCAB, T, PER_DOMAIN = 120, 16, 2


def rank_inputs(rank: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + rank)  # different data on every rank
    n = PER_DOMAIN * len(DOMAINS)
    ids = torch.randint(1, VOCAB, (n, T), generator=g)
    lengths = torch.randint(4, T + 1, (n,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # pad id 0 after the length
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "domain_ids": torch.arange(len(DOMAINS)).repeat_interleave(PER_DOMAIN)}


def flatten(out) -> dict[str, torch.Tensor]:
    flat = {"logits": out.logits, "all_logits": out.all_logits, "embeddings": out.embeddings}
    flat.update({f"hidden_{i}": h for i, h in enumerate(out.hidden_states)})
    flat.update({f"attention_{i}": a for i, a in enumerate(out.attentions)})
    return flat


def check(ds_path: str, dist) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, dropout=0.1)  # eval mode must switch it off
    model = build_model(cfg, len(DOMAINS), len(LABELS), VOCAB, 0, T, domains=DOMAINS, labels=LABELS).eval()
    batch = rank_inputs(dist.rank)
    with torch.no_grad():
        ref = flatten(model(**batch, output_internals=True))
    n_params = sum(p.numel() for p in model.parameters())
    micro = PER_DOMAIN * len(DOMAINS)
    engine = build_teacher_engine(copy.deepcopy(model), teacher_ds_config(read_ds_config(ds_path), micro, dist.world_size))
    fraction = partition_fraction(engine)
    with torch.no_grad():
        got = flatten(engine(**batch, output_internals=True))
    diffs = {k: float((ref[k].float() - got[k].float()).abs().max()) for k in ref}
    trainable = sum(p.numel() for p in engine.module.parameters() if p.requires_grad)
    loaded_fraction, loaded_diffs = check_loaded(model, batch, ref, ds_path, micro, dist)
    return {"fraction": fraction, "max_abs_diff": diffs, "params": n_params, "trainable_after": trainable,
            "module_training": engine.module.training, "loaded_fraction": loaded_fraction,
            "loaded_max_abs_diff": loaded_diffs, "error": None}


def check_loaded(model, batch, ref, ds_path: str, micro: int, dist):
    """The trainer's path: an exported teacher loaded straight into partitions (never whole)."""
    export = Path(sys.argv[1]) / f"export_{Path(ds_path).stem}"
    if dist.is_main:
        model.save_pretrained(export)
    barrier()
    t_cfg = teacher_ds_config(read_ds_config(ds_path), micro, dist.world_size)
    loaded = load_partitioned(export, t_cfg, model.attention)
    fraction = partition_fraction(loaded)  # before the engine exists: partitioned from the start
    engine = build_teacher_engine(loaded, t_cfg)
    with torch.no_grad():
        got = flatten(engine(**batch, output_internals=True))
    return fraction, {k: float((ref[k].float() - got[k].float()).abs().max()) for k in ref}


def main(out_dir: str, ds_paths: list[str]) -> int:
    dist = init_distributed()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for ds_path in ds_paths:
        try:
            result = check(ds_path, dist)
        except Exception as err:  # recorded for the test (e.g. DeepSpeed refusing offload on CPU)
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        result.update(rank=dist.rank, world_size=dist.world_size, config=ds_path)
        (out / f"{Path(ds_path).stem}.rank{dist.rank}.json").write_text(json.dumps(result, indent=1))
        barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
