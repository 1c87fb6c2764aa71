"""Seconds per distillation step: kd against hrkd with graph.objective=meta (and gatv2 on `loss`).

One step = teacher forward (no grad) + the distilling module's forward (distill/step.py: with
`meta`, the held-out alignment measurement of distill/graph_meta.py when due) + backward + AdamW
step, on identical random-weight models and batches, in one process without DeepSpeed (the meta
measurement adds no collective and touches no engine state, so an engine's overhead is the same
for every variant). Variants are timed round-robin, one warm-up round, then the median over
--repeats rounds; the ratio column is each variant's median of within-round ratios to kd. The
meta_every=n rows are derived: one measuring step and n-1 gatv2 `loss` steps, averaged.

Default shapes are the grid's (configs/amazon_full.yaml): teacher 6 x 384 (12 heads, FFN 1536),
students L4H192sel (4 x 192, 12 heads, FFN 768) and L3 (3 x 384), K=4 domains x 8 examples,
128 tokens, row lengths uniform in [32, 128]. Prints a table and, last, `meta_vs_kd: X` for the
first student at graph.meta_every=1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig
from hrkd_ds.distill import RelationalDistillLoss
from hrkd_ds.distill.methods import DistillModule
from hrkd_ds.models import build_model

C = 2
STUDENTS = {"L4H192sel": (4, 192, 12, 768), "L3": (3, 384, 12, 1536)}


def variants(meta_rows: int) -> dict[str, GraphConfig]:
    return {
        "kd": GraphConfig(enabled=False),
        "hrkd gatv2 loss": GraphConfig(attention="gatv2"),
        "hrkd gatv2 meta every=1": GraphConfig(attention="gatv2", objective="meta", meta_rows=meta_rows),
    }


def build(student_shape, graph_cfg: GraphConfig, args, seed: int = 0):
    torch.manual_seed(seed)
    teacher = build_model(ModelConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, dropout=0.1),
                          args.domains, C, 30522, 0, args.seq_len, attention="probs").eval()
    L, H, heads, ffn = student_shape
    student = build_model(ModelConfig(hidden_size=H, num_layers=L, num_heads=heads, intermediate_size=ffn, dropout=0.1),
                          args.domains, C, 30522, 0, args.seq_len, attention="probs").train()
    distill = DistillConfig(layer_map=[round((i + 1) * 6 / L) for i in range(L)])
    loss = RelationalDistillLoss.from_config(student, teacher, args.domains, graph_cfg, distill)
    loss.request_internals(student, teacher)
    module = DistillModule(student, loss, args.domains).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    return teacher, module, opt


def batch(args, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    N, T = args.domains * args.batch, args.seq_len
    lens = torch.randint(args.min_length, T + 1, (N,), generator=gen)
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    return {"input_ids": torch.randint(1000, 30000, (N, T), generator=gen) * mask, "attention_mask": mask,
            "token_type_ids": torch.zeros(N, T, dtype=torch.long),
            "domain_ids": torch.arange(args.domains).repeat_interleave(args.batch),
            "labels": torch.randint(0, C, (N,), generator=gen)}


def step(teacher, module, opt, b) -> float:
    start = time.perf_counter()
    out = module(b, teacher=teacher)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    p.add_argument("--domains", type=int, default=4)
    p.add_argument("--batch", type=int, default=8, help="examples per domain")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--min-length", type=int, default=32)
    p.add_argument("--meta-rows", type=int, default=2)
    p.add_argument("--steps", type=int, default=1, help="steps per variant per round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b = batch(args)
    print(f"threads {torch.get_num_threads()}, K={args.domains} x {args.batch} examples, {args.seq_len} tokens, "
          f"meta_rows {args.meta_rows}, {args.steps} steps x {args.repeats} rounds (+1 warm-up)")
    headline = None
    for name in args.students:
        built = {v: build(STUDENTS[name], g, args) for v, g in variants(args.meta_rows).items()}
        rounds: dict[str, list[float]] = {v: [] for v in built}
        for r in range(args.repeats + 1):
            for v, (teacher, module, opt) in built.items():
                t = sum(step(teacher, module, opt, b) for _ in range(args.steps)) / args.steps
                if r:  # round 0 warms up
                    rounds[v].append(t)
        print(f"\nstudent {name}", flush=True)
        print(f"{'variant':<26} {'s/step (median)':>16} {'range':>18} {'x kd':>6}")
        for v, times in rounds.items():
            ratio = statistics.median(t / k for t, k in zip(times, rounds["kd"]))
            print(f"{v:<26} {statistics.median(times):>16.3f} {min(times):>8.3f}-{max(times):<8.3f} {ratio:>6.2f}")
            if headline is None and v == "hrkd gatv2 meta every=1":
                headline = ratio
        # meta_every=n measures on one step in n and is a gatv2 `loss` step otherwise
        loss_r = statistics.median(t / k for t, k in zip(rounds["hrkd gatv2 loss"], rounds["kd"]))
        meta_r = statistics.median(t / k for t, k in zip(rounds["hrkd gatv2 meta every=1"], rounds["kd"]))
        for n in (2, 4):
            print(f"{f'hrkd gatv2 meta every={n}':<26} {'(from the rows above)':>35} {((n - 1) * loss_r + meta_r) / n:>6.2f}",
                  flush=True)
    print(f"\nmeta_vs_kd: {headline:.2f}")


if __name__ == "__main__":
    main()
