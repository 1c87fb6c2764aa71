"""hrkd-plan: per-rank bytes of a distillation run before submitting it (issue 30 item 3, first cut).

Model states follow ZeRO's partitioning (stage 1: optimizer states / N, 2: + gradients / N,
3: + parameters / N); the frozen teacher holds its parameters only (no gradients, no optimizer),
partitioned / N under ZeRO-3 plus the live gather buffers, bounded by DeepSpeed's
stage3_max_live_parameters (and the prefetch bucket) elements. Activations are a BERT-layer
estimate: the teacher's forward keeps one layer's activations, the student keeps all of its
layers' activations for the backward. The fixed runtime cost per rank is a measured input.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from hrkd_ds.errors import EXIT_USAGE, UserError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
GIB = 1024 ** 3


@dataclass(frozen=True)
class Shape:
    """A BERT-shaped encoder: enough to count parameters and activations."""
    layers: int
    hidden: int
    intermediate: int
    vocab: int = 30522
    positions: int = 512
    outputs: int = 0  # classifier outputs (domains x classes in the trainer's heads)

    def params(self) -> int:
        h, i = self.hidden, self.intermediate
        layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h  # attention, FFN, 2 LayerNorms
        embed = (self.vocab + self.positions + 2) * h + 2 * h
        return self.layers * layer + embed + h * h + h + self.outputs * (h + 1)  # + pooler, classifier

    def layer_activation_elems(self, tokens: int, seq: int, heads: int) -> int:
        """Elements saved by one layer's forward for its backward (q,k,v,ctx,out,2 LN in, FFN in/out, scores)."""
        return tokens * (8 * self.hidden + 2 * self.intermediate) + (tokens // seq) * heads * seq * seq * 2


def parse_shape(text: str, field: str) -> Shape:
    try:
        parts = [int(x) for x in text.split("x")]
        if len(parts) not in (3, 4) or min(parts) <= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"{field}: expected LAYERSxHIDDENxINTERMEDIATE[xVOCAB] positive integers, got {text!r}")
    return Shape(*parts)





def model_state_bytes(params: int, stage: int, world: int, dtype: str, trainable: bool) -> dict:
    """Parameters, gradients and optimizer states (Adam: fp32 master + m + v when mixed) per rank."""
    p = DTYPE_BYTES[dtype]
    par = params * p / (world if stage >= 3 else 1)
    if not trainable:
        return {"params": par, "grads": 0.0, "optimizer": 0.0}
    grads = params * p / (world if stage >= 2 else 1)
    opt_per = 8 + (4 if dtype != "fp32" else 0)
    opt = params * opt_per / (world if stage >= 1 else 1)
    return {"params": par, "grads": grads, "optimizer": opt}


def plan(args) -> dict:
    """Per-rank bytes by component and the total."""
    teacher, student = parse_shape(args.teacher, "teacher"), parse_shape(args.student, "student")
    for name in ("classes", "max_positions"):
        if getattr(args, name) <= 0:
            raise UserError(f"{name}: must be positive, got {getattr(args, name)}")
    out = args.domains * args.classes
    teacher = Shape(teacher.layers, teacher.hidden, teacher.intermediate, teacher.vocab, args.max_positions, out)
    student = Shape(student.layers, student.hidden, student.intermediate, student.vocab, args.max_positions, out)
    for name in ("world_size", "batch_per_domain", "domains", "seq_len"):
        if getattr(args, name) <= 0:
            raise UserError(f"{name}: must be positive, got {getattr(args, name)}")
    for name in ("teacher_stage", "student_stage"):
        if getattr(args, name) not in (0, 1, 2, 3):
            raise UserError(f"{name}: must be 0-3, got {getattr(args, name)}")
    n = args.world_size
    t = model_state_bytes(teacher.params(), args.teacher_stage, n, args.teacher_dtype, False)
    s = model_state_bytes(student.params(), args.student_stage, n, args.student_dtype, True)
    gather = 0.0
    if args.teacher_stage == 3:
        # DeepSpeed releases a submodule's gathered parameters after its forward (inference: no
        # backward), so what is live is the largest submodule plus the prefetch bucket, capped by
        # stage3_max_live_parameters and by the whole teacher
        h = teacher.hidden
        largest = max(teacher.vocab * h, 4 * (h * h + h) + 2 * (h * teacher.intermediate) + teacher.intermediate + 5 * h)
        live = min(largest + args.prefetch_bucket, args.max_live_parameters, teacher.params())
        gather = live * DTYPE_BYTES[args.teacher_dtype]
    if args.offload_teacher:
        t["params"] = 0.0
    tokens = args.batch_per_domain * args.domains * args.seq_len
    heads = max(1, teacher.hidden // 64)
    act_t = teacher.layer_activation_elems(tokens, args.seq_len, heads) * DTYPE_BYTES[args.teacher_dtype]
    act_s = (student.layers * student.layer_activation_elems(tokens, args.seq_len, max(1, student.hidden // 64))
             * DTYPE_BYTES[args.student_dtype])
    parts = {"teacher_params": t["params"], "teacher_gather": gather, "student_params": s["params"],
             "student_grads": s["grads"], "student_optimizer": s["optimizer"],
             "teacher_activations": act_t, "student_activations": act_s,
             "fixed_runtime": args.fixed_gib * GIB}
    parts["total"] = sum(parts.values())
    return parts


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hrkd-plan", description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="LAYERSxHIDDENxINTERMEDIATE[xVOCAB]")
    ap.add_argument("--student", required=True)
    ap.add_argument("--world-size", dest="world_size", type=int, default=1)
    ap.add_argument("--teacher-stage", dest="teacher_stage", type=int, default=3)
    ap.add_argument("--student-stage", dest="student_stage", type=int, default=2)
    ap.add_argument("--teacher-dtype", dest="teacher_dtype", choices=sorted(DTYPE_BYTES), default="fp32")
    ap.add_argument("--student-dtype", dest="student_dtype", choices=sorted(DTYPE_BYTES), default="fp32")
    ap.add_argument("--offload-teacher", dest="offload_teacher", action="store_true")
    ap.add_argument("--batch-per-domain", dest="batch_per_domain", type=int, default=8)
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--max-positions", dest="max_positions", type=int, default=512)
    ap.add_argument("--seq-len", dest="seq_len", type=int, default=128)
    ap.add_argument("--max-live-parameters", dest="max_live_parameters", type=int, default=1_000_000_000)
    ap.add_argument("--prefetch-bucket", dest="prefetch_bucket", type=int, default=50_000_000)
    ap.add_argument("--fixed-gib", dest="fixed_gib", type=float, default=1.5,
                    help="measured per-rank runtime cost (torch, DeepSpeed, gloo)")
    ap.add_argument("--memory-gib", dest="memory_gib", type=float, default=None)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parts = plan(args)
    except UserError as e:
        print(f"hrkd-plan: {e}", file=sys.stderr)
        return EXIT_USAGE
    for k, v in parts.items():
        print(f"{k:20s} {v / GIB:10.3f} GiB")
    if args.memory_gib is not None:
        fits = parts["total"] <= args.memory_gib * GIB
        print(f"fits {args.memory_gib} GiB per rank: {'yes' if fits else 'no'}")
        return 0 if fits else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
