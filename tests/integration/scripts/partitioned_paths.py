"""Run by torchrun with 2 ranks: the three teacher-sized paths of issue 30, partitioned and whole.

    torchrun --nproc_per_node 2 tests/integration/scripts/partitioned_paths.py OUT_DIR

Rank 0 writes a small teacher export and its bare encoder (a `BertModel` checkpoint, as a
pretrained teacher is); then, under ds_configs/teacher_zero3.json, every rank builds each path
both ways and writes OUT_DIR/<path>.rank<R>.json with what it held of the teacher and the largest
difference between the two results:
- general: the general stage's pretrained teacher (stages/general.general_teacher's two branches)
  as ZeRO-3 engines, and the general loss of the same student against each;
- init_teacher_layers / init_teacher_select: a student built from the teacher's layers, copied
  from the whole teacher and from the partitioned one (gathered a layer at a time);
- eval: the eval stage's teacher (stages/evaluation.eval_model), whole and as a ZeRO-3 engine.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402

import hrkd_ds.models.student_init as student_init  # noqa: E402
from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig  # noqa: E402
from hrkd_ds.config.deepspeed import read_ds_config  # noqa: E402
from hrkd_ds.distill.methods import build_step_module  # noqa: E402
from hrkd_ds.engine.distributed import barrier, close_process_group, init_distributed  # noqa: E402
from hrkd_ds.engine.teacher import build_teacher_engine, partition_record, teacher_ds_config  # noqa: E402
from hrkd_ds.models.build import build_model, pretrained_config  # noqa: E402
from hrkd_ds.models.loading import load_exported, load_layer_source, load_partitioned  # noqa: E402
from hrkd_ds.stages.evaluation import eval_model  # noqa: E402

DOMAINS, LABELS = ["a", "b", "c"], ["neg", "pos"]
VOCAB, T, PER_DOMAIN, ATTENTION = 120, 16, 2, "scores"
TEACHER = ModelConfig(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, dropout=0.1)
STUDENTS = {  # a student of the teacher's width, and a narrower one selected from it
    "teacher_layers": ModelConfig(init="teacher_layers", teacher_layers=[1, 4], hidden_size=64, num_layers=2, num_heads=4,
                                  intermediate_size=128),
    "teacher_select": ModelConfig(init="teacher_select", teacher_layers=[2, 4], hidden_size=32, num_layers=2, num_heads=2,
                                  intermediate_size=64),
}


def build(cfg, teacher=None):
    return build_model(cfg, len(DOMAINS), len(LABELS), VOCAB, 0, T, attention=ATTENTION, teacher=teacher,
                       domains=DOMAINS, labels=LABELS)


def rank_inputs(rank: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + rank)  # different data on every rank
    n = PER_DOMAIN * len(DOMAINS)
    ids = torch.randint(1, VOCAB, (n, T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.randint(4, T + 1, (n,), generator=g)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "domain_ids": torch.arange(len(DOMAINS)).repeat_interleave(PER_DOMAIN),
            "labels": torch.randint(0, len(LABELS), (n,), generator=g)}


def model_inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def internals(out) -> dict[str, torch.Tensor]:
    flat = {"logits": out.logits, "embeddings": out.embeddings}
    flat.update({f"hidden_{i}": h for i, h in enumerate(out.hidden_states)})
    flat.update({f"attention_{i}": a for i, a in enumerate(out.attentions)})
    return flat


def max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k] is not None)


def held_now(model) -> int:
    """Bytes of the teacher's parameters materialised on this rank right now (gathered or partition)."""
    return sum(p.data.numel() * p.element_size() + (p.ds_tensor.numel() * p.element_size() if hasattr(p, "ds_tensor") else 0)
               for p in model.parameters())


def check_general(pre: Path, t_cfg: dict, batch) -> dict:
    cfg = dataclasses.replace(TEACHER, init="pretrained", pretrained=str(pre))
    teachers = {"whole": build(cfg),  # today's branch: whole on every rank, partitioned by the engine
                "partitioned": load_partitioned(pre, t_cfg, ATTENTION, pretrained_config(cfg, VOCAB, 0, T, DOMAINS, LABELS))}
    record = partition_record(teachers["partitioned"])  # before any engine: partitioned from the start
    torch.manual_seed(2)
    student = build(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, dropout=0.0))
    loss, seen = {}, {}
    for name, teacher in teachers.items():
        torch.manual_seed(3)  # the loss's own trainable parameters (projections, graph): the same both ways
        module = build_step_module("general", copy.deepcopy(student), teacher, len(DOMAINS), GraphConfig(),
                                   DistillConfig(layer_map=[2, 4], attention=ATTENTION))
        engine = build_teacher_engine(teacher, t_cfg)
        with torch.no_grad():
            loss[name] = float(module(batch, teacher=engine).loss)
            out = internals(engine(**model_inputs(batch), output_internals=True))
        seen[name] = {k: v for k, v in out.items() if k != "logits"}  # the task head is fresh either way, never used
    return {**record, "loss_whole": loss["whole"], "loss_partitioned": loss["partitioned"],
            "max_abs_diff": max_diff(seen["whole"], seen["partitioned"])}


def check_init(export: Path, t_cfg: dict, init: str, world: int) -> dict:
    whole = load_exported(export, ATTENTION)
    part = load_layer_source(export, t_cfg, ATTENTION, world)
    record = partition_record(part)
    peak = [held_now(part)]
    original = student_init.gathered

    @contextlib.contextmanager
    def measured(module):
        with original(module):
            if any(hasattr(p, "ds_id") for p in module.parameters()):  # a gather of the partitioned teacher
                peak.append(held_now(part))
            yield

    student_init.gathered = measured
    try:
        built = {}
        for name, teacher in (("whole", whole), ("partitioned", part)):
            torch.manual_seed(5)  # the same fresh classifier both ways
            built[name] = build(STUDENTS[init], teacher=teacher).state_dict()
    finally:
        student_init.gathered = original
    return {**record, "peak_held_bytes": max(peak), "gathers": len(peak) - 1, "after_bytes": held_now(part),
            "max_abs_diff": max_diff(built["whole"], built["partitioned"]),
            "same_keys": sorted(built["whole"]) == sorted(built["partitioned"])}


def check_eval(export: Path, t_cfg: dict, batch) -> dict:
    whole = eval_model(export, ATTENTION, None, "cpu")
    engine = eval_model(export, ATTENTION, t_cfg, "cpu")
    with torch.no_grad():
        a, b = whole(**model_inputs(batch)).logits, engine(**model_inputs(batch)).logits
    acc = [float((x.argmax(-1) == batch["labels"]).float().mean()) for x in (a, b)]
    return {**partition_record(engine), "max_abs_diff": float((a - b).abs().max()), "acc_whole": acc[0], "acc_partitioned": acc[1]}


def main(out_dir: str) -> int:
    dist = init_distributed()
    out = Path(out_dir)
    export, pre = out / "export", out / "pretrained"
    if dist.is_main:
        torch.manual_seed(0)
        teacher = build(TEACHER)
        teacher.save_pretrained(export)
        student_init.base_model(teacher.hf_model).save_pretrained(pre)  # a bare encoder checkpoint, no task head
    barrier()
    t_cfg = teacher_ds_config(read_ds_config("ds_configs/teacher_zero3.json"), PER_DOMAIN * len(DOMAINS), dist.world_size)
    batch = rank_inputs(dist.rank)
    checks = {"general": lambda: check_general(pre, t_cfg, batch),
              "init_teacher_layers": lambda: check_init(export, t_cfg, "teacher_layers", dist.world_size),
              "init_teacher_select": lambda: check_init(export, t_cfg, "teacher_select", dist.world_size),
              "eval": lambda: check_eval(export, t_cfg, batch)}
    for name, run in checks.items():
        try:
            result = {**run(), "error": None}
        except Exception as err:  # recorded for the test
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        result.update(rank=dist.rank, world_size=dist.world_size)
        (out / f"{name}.rank{dist.rank}.json").write_text(json.dumps(result, indent=1))
        barrier()
    close_process_group(together=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
