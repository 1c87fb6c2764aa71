"""A teacher that only fits partitioned: real distillation steps, ZeRO-3 teacher, per-rank bytes (issue 30 item 2).

The teacher is a random-weight BERT written as sharded safetensors (tools/random_teacher.py,
cached under --cache with a checksum). Before anything starts, `hrkd-plan` (hrkd_ds/plan.py)
predicts every rank's bytes; a configuration whose N ranks would not fit this machine's free
memory (MemAvailable, less --headroom-gib) is refused with one line and exit 2, nothing started
(e.g. --teacher-stage 0: N unpartitioned copies). Otherwise N torchrun ranks (gloo, CPU) each load
their partition straight from the shards (`load_partitioned`), build the teacher's ZeRO-3
inference engine (optionally bf16, optionally offload_param) and the student's ZeRO-2 engine
(fp32, TinyBERT-shaped by default), and run --steps distillation steps (teacher forward, fused
HRKD loss, backward, AdamW). Each rank records its resident memory by phase (imports, process
group, teacher load, engines, steps; VmHWM reset between phases) and its step times.

Printed: one row per rank, measured and predicted side by side with their ratio, and a last line
`worst_teacher_bytes_vs_ideal: X peak_rss_vs_full_teacher: Y` (X = max held / (full / N),
Y = max peak RSS / the full teacher's bytes). Timings only mean something on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hrkd_ds import plan as P  # no torch: the refusal starts nothing heavy

ROOT = Path(__file__).resolve().parents[1]

MMAP_THRESHOLD = 65536  # bytes: every tensor above it is its own mapping, unmapped when freed
LAUNCHER_GIB = 0.25  # torchrun's own process (measured RSS about 220 MiB)


def tool_module(name: str):
    """A sibling tool loaded from its file (tools/ is not a package; tools never edit sys.path)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def plan_args(a) -> argparse.Namespace:
    """The planner's view of this benchmark's run."""
    argv = ["--teacher", f"{a.layers}x{a.hidden}x{a.intermediate or 4 * a.hidden}x{a.vocab}", "--student", a.student,
            "--world-size", str(a.ranks), "--teacher-stage", str(a.teacher_stage), "--student-stage", "2",
            "--teacher-dtype", "bf16" if a.bf16 else "fp32", "--batch-per-domain", str(a.batch), "--domains", str(a.domains),
            "--classes", "2", "--max-positions", str(a.seq), "--seq-len", str(a.seq), "--fixed-gib", str(a.fixed_gib),
            "--prefetch-bucket", str(a.prefetch_bucket), "--max-live-parameters", str(a.max_live or 1_000_000_000), "--gather-copies", "1" if a.device == "cuda" else "2"]
    if a.offload:
        argv.append("--offload-teacher")
    return P.build_parser().parse_args(argv)


def refusal(a, parts: dict) -> str | None:
    """One line when the planner says the N ranks do not fit the machine's free memory."""
    need = a.ranks * parts["resident"] + LAUNCHER_GIB * P.GIB
    free = mem_available() - a.headroom_gib * P.GIB
    if need <= free:
        return None
    return (f"bench_big_teacher: refused: the planner predicts {need / P.GIB:.1f} GiB for {a.ranks} ranks "
            f"({parts['resident'] / P.GIB:.2f} GiB each, teacher stage {a.teacher_stage}) but only {free / P.GIB:.1f} GiB "
            f"is free (MemAvailable less {a.headroom_gib} GiB headroom)")


def launch(a, export: Path, out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = str(a.threads)
    if a.device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
    if not a.glibc_default:  # see build_parser: freed gather buffers go back to the OS instead of staying in the heap
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.ranks), "--master_addr", "127.0.0.1",
           "--master_port", str(29600 + os.getpid() % 2000), str(ROOT / "tools" / "big_teacher_worker.py"),
           "--export", str(export), "--out", str(out), "--json", json.dumps(vars(a))]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        sys.exit(f"bench_big_teacher: torchrun with {a.ranks} ranks failed (exit {res.returncode}):\n"
                 f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def table(a, parts: dict, records: list[dict], params: int) -> str:
    mib = lambda b: b / 2**20  # noqa: E731
    full = records[0]["full_bytes"]
    lines = [f"teacher {a.layers} x {a.hidden} (FFN {a.intermediate}, vocab {a.vocab}): {params / 1e9:.3f} B parameters, "
             f"{mib(full):.0f} MiB {'bf16' if a.bf16 else 'fp32'}; student {a.student}; {a.ranks} ranks, "
             f"{a.domains} domains x {a.batch} rows x {a.seq} tokens per rank, {a.steps} steps"
             f"{', offload_param' if a.offload else ''}",
             f"{'rank':>4} {'held MiB':>9} {'pred':>7} {'ratio':>6} {'x 1/N':>6} | {'fixed MiB':>9} {'pred':>6} {'ratio':>6} | "
             f"{'load peak':>9} {'pred':>6} {'ratio':>6} | {'step peak':>9} {'pred':>6} {'ratio':>6} | {'step s':>7} {'pred':>6} {'ratio':>6}"]
    pred_held, pred_fixed = parts["teacher_params_held"], parts["fixed_runtime"]
    worst = worst_peak = 0.0
    for r in records:
        x_ideal = r["held_bytes"] / (full / a.ranks)
        worst, worst_peak = max(worst, x_ideal), max(worst_peak, r["peak_rss_bytes"] / full)
        step = statistics.median(r["step_s"][1:] or r["step_s"])
        row = [(mib(r["held_bytes"]), mib(pred_held)), (mib(r["fixed_rss_bytes"]), mib(pred_fixed)),
               (mib(r["load_peak_bytes"]), mib(parts["load_peak"])), (mib(r["step_peak_bytes"]), mib(parts["step_peak"])),
               (step, parts["step_s"])]
        cells = [f"{m:9.0f} {p:6.0f} {m / p if p else float('nan'):6.2f}" for m, p in row[1:4]]
        lines.append(f"{r['rank']:>4} {row[0][0]:9.0f} {row[0][1]:7.0f} {row[0][0] / row[0][1]:6.3f} {x_ideal:6.3f} | "
                     + " | ".join(cells) + f" | {step:7.2f} {parts['step_s']:6.2f} {step / parts['step_s']:6.2f}")
    if a.device == "cuda":  # device memory: the planner's total is what sits on the device (offloaded partition not)
        device = parts["total"] - parts["fixed_runtime"] - parts["engine_runtime"]  # those two are host RSS
        lines += [f"rank {r['rank']} device peak {mib(r['device_peak_bytes']):.0f} MiB, planner device total "
                  f"{mib(device):.0f} MiB (no fixed runtime)" for r in records]
    lines.append("phases (rank 0, MiB RSS after each): " + ", ".join(f"{k} {mib(v):.0f}" for k, v in records[0]["phases"].items()))
    lines.append(f"worst_teacher_bytes_vs_ideal: {worst:.3f} peak_rss_vs_full_teacher: {worst_peak:.3f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=2048, help="heads = hidden / 64")
    ap.add_argument("--intermediate", type=int, default=None, help="FFN width (default 4 x hidden)")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--student", default="4x312x1200", help="LAYERSxHIDDENxINTERMEDIATE (heads = hidden / 64 rounded, min 1)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--teacher-stage", dest="teacher_stage", type=int, choices=(0, 3), default=3,
                    help="0: every rank loads the whole teacher (the configuration partitioning avoids)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: one rank per GPU, NCCL")
    ap.add_argument("--bf16", action="store_true", help="teacher engine in bf16 (ds_configs/teacher_zero3_bf16.json)")
    ap.add_argument("--offload", action="store_true", help="teacher offload_param to CPU (teacher_zero3_offload.json)")
    ap.add_argument("--prefetch-bucket", dest="prefetch_bucket", type=int, default=50_000_000,
                    help="teacher stage3_prefetch_bucket_size (elements; DeepSpeed's default 5e7)")
    ap.add_argument("--max-live", dest="max_live", type=int, default=None,
                    help="teacher stage3_max_live_parameters (DeepSpeed's default 1e9)")
    ap.add_argument("--reuse-distance", dest="reuse_distance", type=int, default=None,
                    help="teacher stage3_max_reuse_distance (DeepSpeed's default 1e9)")
    ap.add_argument("--domains", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="rows per domain per rank")
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per rank")
    ap.add_argument("--fixed-gib", dest="fixed_gib", type=float, default=P.FIXED_GIB)
    ap.add_argument("--headroom-gib", dest="headroom_gib", type=float, default=4.0)
    ap.add_argument("--cache", default=os.environ.get("HRKD_BENCH_CACHE", os.path.join(tempfile.gettempdir(), "hrkd-bench-cache")))
    ap.add_argument("--glibc-default", dest="glibc_default", action="store_true",
                    help="keep glibc's dynamic mmap threshold: tensors under 32 MiB (every gathered teacher weight) come "
                         "from the heap, whose freed space stays resident (measured: +400 MiB per rank at 12 x 768)")
    ap.add_argument("--records", default=None, help="also write the per-rank JSON records here")
    return ap


def check(a) -> None:
    for name in ("layers", "hidden", "vocab", "ranks", "domains", "batch", "seq", "steps", "threads", "prefetch_bucket"):
        if getattr(a, name) <= 0:
            raise P.UserError(f"{name}: must be positive, got {getattr(a, name)}")
    if a.teacher_stage == 0 and (a.bf16 or a.offload):
        raise P.UserError("teacher_stage: 0 runs the plain fp32 teacher; bf16/offload need stage 3")


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    a.intermediate = a.intermediate or 4 * a.hidden
    try:
        check(a)
        parts = P.plan(plan_args(a))
    except P.UserError as e:
        print(f"bench_big_teacher: {e}", file=sys.stderr)
        return P.EXIT_USAGE
    why = refusal(a, parts)
    if why:
        print(why)
        return P.EXIT_USAGE
    random_teacher = tool_module("random_teacher")  # torch from here on
    cfg = random_teacher.teacher_config(a.layers, a.hidden, a.intermediate, a.vocab, a.seq, a.domains, 2)
    export = Path(a.cache) / f"teacher-{a.layers}x{a.hidden}x{a.intermediate}x{a.vocab}-p{a.seq}-k{a.domains}"
    t0 = time.perf_counter()
    params, reused = random_teacher.ensure(export, cfg)
    print(f"teacher export {export}: {'reused (checksums match)' if reused else 'written'} in {time.perf_counter() - t0:.0f} s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="hrkd-big-teacher-") as tmp:
        launch(a, export, Path(tmp))
        records = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]
    if a.records:
        Path(a.records).write_text(json.dumps({"args": vars(a), "plan": parts, "records": records}, indent=1))
    print(table(a, parts, records, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
