"""Samples/s of one full distillation step: plain PyTorch, DeepSpeed engines, the reference style.

One step = teacher forward (no grad) + student forward and backward through the fused HRKD loss +
optimizer step (AdamW), on identical models and batches. Variants, timed round-robin in one
process (world of 1), median over --repeats rounds after one warm-up round:

- plain: the same math in a plain PyTorch loop (no DeepSpeed);
- zero{0,2,3}: the student in a DeepSpeed engine at that ZeRO stage, teacher unpartitioned (a
  plain module) or in its ZeRO-3 inference engine (`t-zero3`), as the trainer builds them;
- zero2/t-zero3-bf16: the teacher engine from ds_configs/teacher_zero3_bf16.json;
- zero2/t-zero3-padded: the trainer's default with padded forwards (`padding_free` off) instead
  of the packed ones (hrkd_ds/models/packing.py): what packing alone gains;
- reference: one full teacher copy per domain (K teacher forwards on each domain's rows, every
  layer's map and state kept, padded as the release pads) and the per-domain loop loss
  (ReferenceDistillLoss).

Paper shapes by default (teacher 12 x 768, student 4 x 312, K=5 x 8 examples, 128 tokens, random
right padding: row lengths uniform in [--min-length = 32, 128], random weights). On a quiet 2-core
CPU a round of all variants takes about 40 s (3-5 s per step). Also printed:
- the bf16 teacher's loss terms against the fp32 teacher's (max relative difference per term);
- the 24 x 1024 teacher forward with every layer's internals vs only the mapped layers'
  (time, and activation memory = peak RSS minus RSS before the forward, each in a fresh
  subprocess so one variant's peak cannot hide the other's); skip with --no-forward.

`--device cuda` runs the same variants on one GPU (CUDA-synchronised timing; activation memory =
peak allocated minus allocated before the forward); not yet run on a GPU by this project.

Last line: `engine_overhead_pct: X speedup_vs_reference_style: Y`, X = ZeRO-2 engine with the
teacher unpartitioned vs the plain loop, Y = reference step time / the trainer's default step
(ZeRO-2 student, ZeRO-3 teacher), both in fp32. Each ratio is the median over rounds of the two
variants' ratio within a round (timed seconds apart, so a slow stretch of a shared machine hits
both); the lines before it give each ratio's range over rounds and the same ratio with the bf16
teacher engine and with padded forwards. `--sweep` prints samples/s against teacher size instead.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time

import torch

from hrkd_ds.engine.distributed import init_distributed, silence_known_warnings
# the variants and their shared pieces (tools/, this script's folder)
from bench_step_variants import ALL_VARIANTS, TEACHER_JSON, build_pair, inputs, make_batch, make_steps, sync, teacher_engine

SWEEP = [(6, 384), (12, 768), (24, 1024)]
SWEEP_VARIANTS = ["plain", "zero2", "zero2/t-zero3", "reference"]


def time_interleaved(a, steps: dict, batch, repeats: int) -> dict[str, list[float]]:
    """Seconds per step of each round, variants round-robin (after one warm-up round), so that
    load hits all alike and one round's variants can be compared with each other."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(repeats + 1):
        for name, step in steps.items():
            sync(a)
            t0 = time.perf_counter()
            step(batch)
            sync(a)
            if i:
                times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> tuple[float, float, float]:
    """(median, min, max) over rounds of times[num] / times[den] within the same round.

    A shared machine slows whole stretches of a run; a ratio of two variants timed seconds apart
    in one round cancels most of that, a ratio of two medians taken over different rounds not.
    """
    r = [n / d for n, d in zip(times[num], times[den])]
    return statistics.median(r), min(r), max(r)


def ratio_text(times: dict[str, list[float]], num: str, den: str) -> str:
    if not {num, den} <= times.keys():
        return "nan"
    med, lo, hi = paired_ratio(times, num, den)
    return f"{med:.2f} (rounds {lo:.2f}-{hi:.2f})"


def paired_median(times: dict[str, list[float]], num: str, den: str) -> float:
    """paired_ratio's median, nan when a variant was not run."""
    return paired_ratio(times, num, den)[0] if {num, den} <= times.keys() else float("nan")


def bf16_term_differences(a, teacher, module, batch) -> dict[str, float]:
    """Max relative difference of each loss term, bf16 teacher engine vs the fp32 teacher."""
    bf16 = teacher_engine(teacher, TEACHER_JSON["t-zero3-bf16"], a.domains * a.batch)
    module.eval()
    with torch.no_grad():
        s_out = module.model(**inputs(batch), output_internals=True)
        t32 = teacher(**inputs(batch), output_internals=True)
        t16 = bf16(**inputs(batch), output_internals=True)
        a32 = module.loss(s_out, t32, batch["attention_mask"], a.domains)
        a16 = module.loss(s_out, t16, batch["attention_mask"], a.domains)
    return {k: float(((a32.terms[k] - a16.terms[k]).abs() / a32.terms[k].abs().clamp_min(1e-12)).max())
            for k in ("emb", "hid", "att", "pred")} | {"total": abs(a32.total.item() / a16.total.item() - 1)}


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def forward_activation_bytes(a, mode: str) -> int:
    """In this (fresh) process: peak RSS of one big-teacher forward minus RSS before it.

    The peak is reset first (Linux /proc/self/clear_refs "5"), so building the models cannot hide it.
    """
    teacher, _ = build_pair(a, a.forward_layers, a.forward_hidden)
    if mode == "all":
        teacher.select_internals()
    batch = inputs(make_batch(a, torch.Generator().manual_seed(0)))
    gc.collect()
    cuda = a.device.startswith("cuda")
    sync(a)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status_bytes("VmRSS")
    with torch.no_grad():
        out = teacher(**batch, output_internals=True)
    sync(a)
    peak = torch.cuda.max_memory_allocated() if cuda else status_bytes("VmHWM")
    del out
    return peak - before


def forward_rows(a) -> dict[str, dict[str, float]]:
    """Time (interleaved, this process) and activation memory (fresh subprocess each) of the big
    teacher's forward with every layer's internals vs only the mapped layers'."""
    teacher, _ = build_pair(a, a.forward_layers, a.forward_hidden)
    mapped = (teacher.hidden_layers, teacher.map_layers)
    batch = inputs(make_batch(a, torch.Generator().manual_seed(0)))
    times: dict[str, list[float]] = {"all": [], "selected": []}
    for i in range(a.forward_repeats + 1):
        for mode in times:
            teacher.select_internals() if mode == "all" else teacher.select_internals(*([j + 1 for j in m] for m in mapped))
            sync(a)
            t0 = time.perf_counter()
            with torch.no_grad():
                teacher(**batch, output_internals=True)
            sync(a)
            if i:
                times[mode].append(time.perf_counter() - t0)
    del teacher
    gc.collect()
    rows = {}
    for mode in times:
        cmd = [sys.executable, os.path.abspath(__file__), "--measure-forward", mode, *sys.argv[1:]]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[mode] = {"seconds": statistics.median(times[mode]), "activation_bytes": int(res.stdout.strip().splitlines()[-1])}
    return rows


def main_table(a) -> None:
    variants = a.variants.split(",") if a.variants else ALL_VARIANTS
    batch = make_batch(a, torch.Generator().manual_seed(0))
    teacher, module, steps = make_steps(a, variants, a.teacher_layers, a.teacher_hidden)
    rounds = time_interleaved(a, steps, batch, a.repeats)
    t = {k: statistics.median(v) for k, v in rounds.items()}
    N = a.domains * a.batch
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"cpu, threads {torch.get_num_threads()}"
    print(f"{where}, K={a.domains} x B={a.batch}, T={a.seq}, teacher {a.teacher_layers}x"
          f"{a.teacher_hidden}, student {a.student_layers}x{a.student_hidden}, median of {a.repeats} rounds")
    print(f"{'variant (student/teacher)':<28}{'s/step':>10}{'samples/s':>12}")
    for name, sec in t.items():
        print(f"{name:<28}{sec:>10.2f}{N / sec:>12.2f}")
    diffs = bf16_term_differences(a, teacher, module, batch)
    print("bf16 teacher vs fp32, max relative difference per loss term: "
          + " ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    if not a.no_forward:
        rows = forward_rows(a)
        print(f"teacher {a.forward_layers}x{a.forward_hidden} forward          s/forward   activation MiB")
        for mode, r in rows.items():
            print(f"  {mode + ' layers internals':<44}{r['seconds']:>10.2f}{r['activation_bytes'] / 2**20:>16.0f}")
        print(f"forward_time_ratio_all_vs_selected: {rows['all']['seconds'] / rows['selected']['seconds']:.2f} "
              f"activation_ratio_all_vs_selected: {rows['all']['activation_bytes'] / max(1, rows['selected']['activation_bytes']):.2f}")
    # ratios: median over rounds of the within-round ratio (paired_ratio), range in parentheses
    print(f"engine_overhead: zero2 / plain = {ratio_text(rounds, 'zero2', 'plain')}")
    print(f"speedup_vs_reference_style: reference / zero2/t-zero3 = {ratio_text(rounds, 'reference', 'zero2/t-zero3')}")
    if "zero2/t-zero3-bf16" in t:  # not like for like: the reference style runs its teacher in fp32
        print(f"bf16_teacher_speedup_vs_reference_style: {ratio_text(rounds, 'reference', 'zero2/t-zero3-bf16')}")
    if "zero2/t-zero3-padded" in t:  # batching and the fused loss alone
        print(f"padded_speedup_vs_reference_style: {ratio_text(rounds, 'reference', 'zero2/t-zero3-padded')}")
    overhead = (paired_median(rounds, "zero2", "plain") - 1) * 100
    speedup = paired_median(rounds, "reference", "zero2/t-zero3")
    print(f"engine_overhead_pct: {overhead:.1f} speedup_vs_reference_style: {speedup:.2f}")


def main_sweep(a) -> None:
    N = a.domains * a.batch
    batch = make_batch(a, torch.Generator().manual_seed(0))
    print(f"samples/s against teacher size (K={a.domains} x B={a.batch}, T={a.seq}, student {a.student_layers}x{a.student_hidden})")
    print(f"{'teacher':<10}" + "".join(f"{v:>16}" for v in SWEEP_VARIANTS) + f"{'speedup vs ref':>16}")
    for layers, hidden in SWEEP:
        _, _, steps = make_steps(a, SWEEP_VARIANTS, layers, hidden)
        rounds = time_interleaved(a, steps, batch, a.repeats)
        t = {k: statistics.median(v) for k, v in rounds.items()}
        print(f"{layers}x{hidden:<7}" + "".join(f"{N / t[v]:>16.2f}" for v in SWEEP_VARIANTS)
              + f"{paired_ratio(rounds, 'reference', 'zero2/t-zero3')[0]:>16.2f}")
        del steps
        gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one GPU)")
    ap.add_argument("--domains", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="examples per domain")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--min-length", type=int, help="shortest row (default seq / 4); = --seq for rows without padding")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--teacher-layers", type=int, default=12)
    ap.add_argument("--teacher-hidden", type=int, default=768, help="heads = hidden / 64, FFN = 4 x hidden")
    ap.add_argument("--student-layers", type=int, default=4)
    ap.add_argument("--student-hidden", type=int, default=312)
    ap.add_argument("--student-heads", type=int, default=12)
    ap.add_argument("--student-intermediate", type=int, default=1200)
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds after one warm-up round")
    ap.add_argument("--forward-repeats", type=int, default=2)
    ap.add_argument("--forward-layers", type=int, default=24, help="teacher of the forward-memory measurement")
    ap.add_argument("--forward-hidden", type=int, default=1024)
    ap.add_argument("--variants", default="", help=f"comma list out of {','.join(ALL_VARIANTS)} (default: all)")
    ap.add_argument("--sweep", action="store_true", help=f"samples/s for teachers {SWEEP} instead of the table")
    ap.add_argument("--no-forward", action="store_true", help="skip the 24-layer teacher forward measurement")
    ap.add_argument("--measure-forward", choices=["all", "selected"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure_forward:
        print(forward_activation_bytes(a, a.measure_forward))
        return
    init_distributed()
    silence_known_warnings()
    main_sweep(a) if a.sweep else main_table(a)


if __name__ == "__main__":
    main()
