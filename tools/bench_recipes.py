"""What one training step of each recipe costs: `none`, `kd`, `hrkd`, `logit-kd` (online teacher
and with cached teacher logits) and `two-stage` (both phases), side by side on identical models.

A step = the module's forward (distill/step.py: teacher forward when the recipe has one, student
forward, loss) + backward + AdamW, in a plain loop (world of 1, no DeepSpeed: the engine adds the
same few percent to every recipe, tools/bench_step.py). The recipes are timed round-robin, one
step each per round, after a warm-up round; each figure is the median over --repeats rounds and
each ratio the median of the within-round ratios, so a slow stretch of a shared machine hits every
recipe alike. Shapes default to the grid's Amazon cells: the MiniLM-L6-shaped teacher (6 x 384),
the `L3` student (teacher layers 2, 4, 6) or `L4H192sel` (4 x 192, selected weights), 4 domains x
8 examples, 128 tokens, row lengths uniform in [--min-length, 128], random weights.

A recipe's cell costs its steps x this, plus evaluation; `transfer.augment_factor` = N multiplies
the steps per epoch by N + 1 (docs/METHOD.md, "Transfer set and cached teacher targets").
Last line: `logit_kd_cached_vs_kd: X` (the step-time ratio; < 1 is cheaper).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig
from hrkd_ds.distill.methods import build_step_module
from hrkd_ds.models.build import build_model

RECIPES = ("none", "kd", "hrkd", "logit-kd", "logit-kd cached", "two-stage (layer phase)", "two-stage (pred phase)")
STUDENTS = {
    "L3": ModelConfig(init="teacher_layers", teacher_layers=[2, 4, 6], hidden_size=384, num_layers=3, num_heads=12,
                      intermediate_size=1536, dropout=0.1),
    "L4H192sel": ModelConfig(init="teacher_select", teacher_layers=[2, 3, 5, 6], num_layers=4, hidden_size=192, num_heads=12,
                             intermediate_size=768, dropout=0.1),
}


def make_batch(K: int, B: int, T: int, min_len: int, vocab: int, C: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    lengths = torch.randint(min_len, T + 1, (K * B,), generator=gen)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return {"input_ids": torch.randint(5, vocab, (K * B, T), generator=gen) * mask, "attention_mask": mask,
            "token_type_ids": torch.zeros(K * B, T, dtype=torch.long), "domain_ids": torch.arange(K).repeat_interleave(B),
            "labels": torch.randint(0, C, (K * B,), generator=gen)}


def build(recipe: str, args, teacher) -> tuple[torch.nn.Module, object, float]:
    """(module, teacher passed per call, progress): a fresh student per recipe, same init seed."""
    torch.manual_seed(0)
    student = build_model(STUDENTS[args.student], args.domains, 2, args.vocab, 0, args.seq, attention="probs", teacher=teacher)
    name = recipe.split()[0]
    layer_map = STUDENTS[args.student].teacher_layers if args.student == "L4H192sel" else []
    module = build_step_module(name, student, teacher if name != "none" else None, args.domains, GraphConfig(dropout=0.0),
                               DistillConfig(method=name, layer_map=layer_map))
    progress = 0.9 if "pred phase" in recipe else 0.0
    return module, (None if name == "none" or "cached" in recipe else teacher), progress


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", choices=sorted(STUDENTS), default="L4H192sel")
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8, help="examples per domain")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--min-length", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    teacher_cfg = ModelConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, dropout=0.0)
    teacher = build_model(teacher_cfg, args.domains, 2, args.vocab, 0, args.seq, attention="probs").eval()
    gen = torch.Generator().manual_seed(2)
    batch = make_batch(args.domains, args.batch, args.seq, args.min_length, args.vocab, 2, gen)
    with torch.no_grad():  # what the cache would hold: the teacher's logits for these rows
        batch["teacher_logits"] = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                                                    "domain_ids")}).logits
    runs = {}
    for recipe in RECIPES:
        module, t, progress = build(recipe, args, teacher)
        module.train()
        runs[recipe] = (module, t, progress, torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5))

    def step(recipe: str) -> float:
        module, t, progress, opt = runs[recipe]
        start = time.perf_counter()
        out = module(batch, teacher=t, progress=progress)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for recipe in RECIPES:  # warm-up round
        step(recipe)
    rounds = [{r: step(r) for r in RECIPES} for _ in range(args.repeats)]
    med = {r: statistics.median(x[r] for x in rounds) for r in RECIPES}
    ratio = {r: statistics.median(x[r] / x["kd"] for x in rounds) for r in RECIPES}
    print(f"student {args.student}, teacher 6 x 384, {args.domains} domains x {args.batch} rows x {args.seq} tokens, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} rounds")
    print("| recipe | s per step | vs kd (median of within-round ratios) |\n|---|---:|---:|")
    for r in RECIPES:
        print(f"| {r} | {med[r]:.3f} | {ratio[r]:.2f}x |")
    print(f"logit_kd_cached_vs_kd: {ratio['logit-kd cached']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
