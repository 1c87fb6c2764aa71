"""One rank of tools/bench_big_teacher.py: load the teacher partitioned, distil a few steps, record bytes by phase.

Resident memory is read from /proc/self/status after each phase, with the peak (VmHWM) reset
before the teacher load and before the steps, so each phase's peak is its own. The first phase
(imports, process group, before any model) is the per-rank fixed cost the planner takes as input.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

T_START = time.perf_counter()
import torch  # noqa: E402

from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig, StageConfig  # noqa: E402
from hrkd_ds.config.deepspeed import read_ds_config, with_batch_sizes  # noqa: E402
from hrkd_ds.distill import RelationalDistillLoss, resolve_layer_map  # noqa: E402
from hrkd_ds.distill.methods import DistillModule  # noqa: E402
from hrkd_ds.engine.distributed import close_process_group, init_distributed, silence_known_warnings  # noqa: E402
from hrkd_ds.engine.student import build_student_engine  # noqa: E402
from hrkd_ds.engine.teacher import build_teacher_engine, partition_record, teacher_ds_config  # noqa: E402
from hrkd_ds.models import build_model  # noqa: E402
from hrkd_ds.models.loading import load_exported, load_partitioned  # noqa: E402
from bench_memory import reset_peak, status_bytes as status  # noqa: E402  (tools/, this script's folder)

C = 2


def make_batch(a, gen: torch.Generator) -> dict[str, torch.Tensor]:
    n = a["domains"] * a["batch"]
    ids = torch.randint(1, a["vocab"], (n, a["seq"]), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "domain_ids": torch.arange(a["domains"]).repeat_interleave(a["batch"]),
            "labels": torch.randint(0, C, (n,), generator=gen)}


def student_model(a):
    layers, hidden, inter = (int(x) for x in a["student"].split("x")[:3])
    heads = next(h for h in (12, 8, 4, 2, 1) if hidden % h == 0)
    cfg = ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=inter, dropout=0.0)
    return build_model(cfg, a["domains"], C, a["vocab"], 0, a["seq"], attention="probs")


def gathered_bytes(engine) -> int:
    """Bytes of teacher parameters ZeRO-3 still holds gathered (whole) on this rank."""
    module = getattr(engine, "module", engine)
    return sum(p.numel() * p.element_size() for p in module.parameters()
               if hasattr(p, "ds_tensor") and p.ds_status.name != "NOT_AVAILABLE")


def teacher_json(a) -> dict:
    """The trainer's teacher JSON for these switches; bf16 with offload is the offload JSON + bf16."""
    cfg = read_ds_config("ds_configs/" + ("teacher_zero3_offload.json" if a["offload"] else
                                          "teacher_zero3_bf16.json" if a["bf16"] else "teacher_zero3.json"))
    if a["bf16"]:
        cfg["bf16"] = {"enabled": True}
    zero = cfg["zero_optimization"]
    zero["stage3_prefetch_bucket_size"] = a["prefetch_bucket"]
    if a.get("max_live") is not None:
        zero["stage3_max_live_parameters"] = a["max_live"]
    if a.get("reuse_distance") is not None:
        zero["stage3_max_reuse_distance"] = a["reuse_distance"]
    return cfg


def all_gather_rate(device, numel: int = 1 << 24) -> float:
    """GB/s this rank receives in an all-gather of a 64 MiB fp32 tensor (the planner's --gather-gbps)."""
    world = torch.distributed.get_world_size()
    if world == 1:
        return float("inf")
    part = torch.ones(numel // world, device=device)
    out = torch.empty(part.numel() * world, device=device)
    torch.distributed.all_gather_into_tensor(out, part)  # warm-up
    t0 = time.perf_counter()
    torch.distributed.all_gather_into_tensor(out, part)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out.numel() * 4 * (world - 1) / world / (time.perf_counter() - t0) / 1e9


def device_peak() -> int:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0


def load_teacher(a, export: str, dist, micro: int):
    """The teacher, partitioned under ZeRO-3 (its DeepSpeed config returned too) or whole; the load's
    seconds and its resident peak."""
    reset_peak()
    t0 = time.perf_counter()
    t_cfg = None
    if a["teacher_stage"] == 3:
        t_cfg = teacher_ds_config(teacher_json(a), micro, dist.world_size)
        teacher = load_partitioned(export, t_cfg, "probs")
    else:
        teacher = load_exported(export, "probs").to(dist.device)
    return teacher, t_cfg, time.perf_counter() - t0, status("VmHWM")


def build_engines(a, teacher, t_cfg, dist, micro: int, phases: dict):
    """The student, its HRKD loss and both engines, recording resident bytes after each."""
    student = student_model(a)
    phases["student_built"] = status("VmRSS")
    layer_map = resolve_layer_map(student.num_layers, teacher.num_layers,
                                  None if teacher.num_layers % student.num_layers == 0 else
                                  [round((i + 1) * teacher.num_layers / student.num_layers) for i in range(student.num_layers)])
    loss = RelationalDistillLoss.from_config(student, teacher, a["domains"], GraphConfig(), DistillConfig(layer_map=layer_map))
    loss.request_internals(student, teacher)
    module = DistillModule(student, loss, a["domains"])
    t_engine = build_teacher_engine(teacher, t_cfg) if a["teacher_stage"] == 3 else teacher.eval().requires_grad_(False)
    phases["teacher_engine"] = status("VmRSS")
    s_path = "ds_configs/zero2.json"
    engine = build_student_engine(module, with_batch_sizes(read_ds_config(s_path), micro, dist.world_size, s_path),
                                  StageConfig(), 1000)
    engine.train()
    phases["engines"] = status("VmRSS")
    return t_engine, engine


def teacher_forwards(a, t_engine, gen: torch.Generator, dist, phases: dict) -> tuple[list[float], list[int]]:
    """Seconds and resident bytes added of the teacher's forward alone, twice."""
    batch = {k: v.to(dist.device) for k, v in make_batch(a, gen).items()}
    extras, forward_s = [], []
    for _ in range(2):  # the teacher's forward alone: gathered parameters + its activations (the
        reset_peak()   # second with DeepSpeed's prefetch, which starts once a forward has been traced)
        before, t0 = status("VmRSS"), time.perf_counter()
        with torch.no_grad():
            t_engine(**{k: v for k, v in batch.items() if k != "labels"})
        forward_s.append(time.perf_counter() - t0)
        extras.append(status("VmHWM") - before)
    phases["teacher_forward"] = status("VmRSS")
    return forward_s, extras


def distill_steps(a, engine, t_engine, gen: torch.Generator, dist, phases: dict):
    """a["steps"] distillation steps: their seconds and the last step's output."""
    reset_peak()
    times = []
    for _ in range(a["steps"]):
        batch = {k: v.to(dist.device) for k, v in make_batch(a, gen).items()}
        t0 = time.perf_counter()
        out = engine(batch, teacher=t_engine)
        engine.backward(out.loss)
        engine.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    phases["steps"] = status("VmRSS")
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", required=True)
    cli = ap.parse_args()
    a = json.loads(cli.json)
    phases = {"imports": status("VmRSS")}
    import_s = time.perf_counter() - T_START
    dist = init_distributed()
    silence_known_warnings()
    phases["process_group"] = fixed = status("VmRSS")
    fixed_hwm = status("VmHWM")
    gather_gbps = all_gather_rate(dist.device)
    micro = a["domains"] * a["batch"]
    try:
        teacher, t_cfg, load_s, load_peak = load_teacher(a, cli.export, dist, micro)
        phases["teacher_loaded"] = status("VmRSS")
        t_engine, engine = build_engines(a, teacher, t_cfg, dist, micro, phases)
        record = {"rank": dist.rank, "world_size": dist.world_size, **partition_record(t_engine)}
        gen = torch.Generator().manual_seed(dist.rank)
        forward_s, extras = teacher_forwards(a, t_engine, gen, dist, phases)
        record["teacher_forward_s"] = forward_s
        record["teacher_first_forward_extra_bytes"] = extras[0]
        times, out = distill_steps(a, engine, t_engine, gen, dist, phases)
        record["gathered_after_steps_bytes"] = gathered_bytes(t_engine)
        step_peak = status("VmHWM")
        record.update(phases=phases, fixed_rss_bytes=fixed, fixed_hwm_bytes=fixed_hwm, import_s=import_s, load_s=load_s,
                      load_peak_bytes=load_peak, step_peak_bytes=step_peak, peak_rss_bytes=max(load_peak, step_peak, fixed_hwm),
                      teacher_forward_extra_bytes=extras[-1], step_s=times, loss=float(out.loss),
                      threads=torch.get_num_threads(), gather_gbps=gather_gbps, device=str(dist.device), device_peak_bytes=device_peak())
        Path(cli.out, f"rank{dist.rank}.json").write_text(json.dumps(record))
    except BaseException:
        close_process_group(together=False)  # a rank that failed alone must not wait at a barrier
        raise
    close_process_group(together=True)


if __name__ == "__main__":
    main()
