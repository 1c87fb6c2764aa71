"""hrkd-plan: per-rank bytes of a distillation run before submitting it (issue 30 item 3).
What it is given (shapes, measured rates, flags, a run's config) is read by hrkd_ds/plan_inputs.py.

Model states follow ZeRO's partitioning (stage 1: optimizer states / N, 2: + gradients / N,
3: + parameters / N); the frozen teacher holds its parameters only (no gradients, no optimizer),
partitioned / N under ZeRO-3 plus the live gather buffers, bounded by DeepSpeed's
stage3_max_live_parameters (and the prefetch bucket) elements. Activations are a BERT-layer
estimate: the teacher's forward keeps one layer's activations, the student keeps all of its
layers' activations for the backward. The fixed runtime cost per rank is a measured input.

Validated against tools/bench_big_teacher.py runs (docs/BENCHMARKS.md, "Capacity planner"):
bytes held, the teacher-load peak and the distillation-step peak per rank.
"""

from __future__ import annotations

import sys

from hrkd_ds.errors import EXIT_USAGE, UserError
# what the planner is given (shapes, measured rates, flags and run configs), re-exported for its callers
from hrkd_ds.plan_inputs import DTYPE_BYTES, FIXED_GIB, Shape, build_parser, parse, teacher_shapes  # noqa: F401

STORED_BYTES = 4  # exports are fp32 safetensors
GIB = 1024 ** 3


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


def largest_submodule(s: Shape) -> int:
    """Elements of the largest module whose own parameters ZeRO-3 gathers at once (word embeddings
    or the FFN's input Linear)."""
    return max(s.vocab * s.hidden, s.hidden * s.intermediate + s.intermediate)


def gather_bytes(args, teacher: Shape) -> float:
    """Gathered teacher parameters alive at once under ZeRO-3 inference (measured, docs/BENCHMARKS.md).

    Once a forward has been traced DeepSpeed keeps gathered parameters until
    stage3_max_live_parameters elements are live (a submodule larger than that is still gathered
    whole): with the default 1e9, a teacher under 1B parameters ends up whole on every rank during
    its forward. On top of that, gloo's all-gather on CPU holds the received chunks of the fetch
    in flight (the current submodule + the prefetch bucket, within the live cap) beside the
    gathered tensors (`gather_copies` 2); NCCL writes in place (1, assumed, not measured here)."""
    largest = largest_submodule(teacher)
    live = min(teacher.params(), max(args.max_live_parameters, largest))
    in_flight = min(largest + args.prefetch_bucket, live)
    return (live + in_flight * (args.gather_copies - 1)) * DTYPE_BYTES[args.teacher_dtype]


def loss_params(student: Shape, teacher: Shape, graph: bool, domains: int, heads: int = 8, per_head: int = 8,
                pooled: bool = False, dynamic: bool = False) -> int:
    """Trainable parameters of the HRKD loss, optimised with the student (distill/relational_loss.py):
    a projection student -> teacher width per mapped layer and the embeddings, and with the graph
    the compare-aggregate matrices U (S, Ht, Ht), V (S, K, Ht, Ht) and the two GAT levels (`dynamic`,
    graph.attention=gatv2: target projections in both and an O-wide second-level score, distill/graph.py),
    and with the pooled term its projection W_p (docs/METHOD.md). At a wide
    teacher these outweigh the student (24 x 2048 teacher, 4 x 312 student: 54M against 14.5M)."""
    s, hs, ht = student.layers, student.hidden, teacher.hidden
    n = (s + 1 + pooled) * (hs * ht + ht)
    if graph:
        h, o = heads, per_head
        gat = (2 * h * ht * o + h * o + h * o + 2 * h * o * o + o) if dynamic else (h * ht * o + 2 * h * o + h * o + 2)
        n += (1 + domains) * s * ht * ht + (s + 1) * gat
    return n


def student_zero_bytes(params: int, stage: int, world: int, dtype: str) -> dict:
    """DeepSpeed ZeRO-1/2 keeps, besides the model states above, an fp32 master copy of its
    partition (cloned even when training in fp32) and, with contiguous gradients, a bucket that
    receives every gradient before the reduce-scatter (reduce_bucket_size 5e8 elements, touched
    only as far as gradients fill it)."""
    s = model_state_bytes(params, stage, world, dtype, True)
    if stage in (1, 2):
        s["optimizer"] += params * 4 / world
        s["grads"] += params * DTYPE_BYTES[dtype]
    return s


def plan(args) -> dict:
    """Per-rank bytes by component, the two peaks (teacher load; distillation steps), what stays
    resident (what must fit: file pages of the load are page cache), and the step time."""
    teacher, student = teacher_shapes(args)
    for name in ("world_size", "batch_per_domain", "domains", "seq_len"):
        if getattr(args, name) <= 0:
            raise UserError(f"{name}: must be positive, got {getattr(args, name)}")
    for name in ("teacher_stage", "student_stage"):
        if getattr(args, name) not in (0, 1, 2, 3):
            raise UserError(f"{name}: must be 0-3, got {getattr(args, name)}")
    n = args.world_size
    t = model_state_bytes(teacher.params(), args.teacher_stage, n, args.teacher_dtype, False)
    trainable = student.params() + (loss_params(student, teacher, args.loss == "hrkd", args.domains, pooled=args.pooled,
                                                dynamic=args.graph_attention == "gatv2")
                                   if args.loss != "none" else 0)
    s = student_zero_bytes(trainable, args.student_stage, n, args.student_dtype)
    gather = gather_bytes(args, teacher) if args.teacher_stage == 3 else 0.0
    held = t["params"]
    if args.offload_teacher:  # the partition moves to host memory: off the device, still in the process
        t["params"] = 0.0
    tokens = args.batch_per_domain * args.domains * args.seq_len
    heads = max(1, teacher.hidden // 64)
    act_t = teacher.layer_activation_elems(tokens, args.seq_len, heads) * DTYPE_BYTES[args.teacher_dtype]
    act_s = (student.layers * student.layer_activation_elems(tokens, args.seq_len, max(1, student.hidden // 64))
             * DTYPE_BYTES[args.student_dtype])
    parts = {"teacher_params": t["params"], "teacher_gather": gather, "student_params": s["params"],
             "student_grads": s["grads"], "student_optimizer": s["optimizer"],
             "teacher_activations": act_t, "student_activations": act_s,
             "fixed_runtime": args.fixed_gib * GIB, "engine_runtime": args.engine_gib * GIB}
    parts["total"] = sum(parts.values())
    # host view (on a CPU machine also the compute memory): the offloaded partition counts here
    pages = teacher.params() * STORED_BYTES / (n if args.teacher_stage == 3 else 1)  # the shard rows this rank reads
    rows = largest_submodule(teacher) * STORED_BYTES / (n if args.teacher_stage == 3 else 1)
    parts["teacher_params_held"] = held
    parts["teacher_load_pages"] = pages
    parts["load_peak"] = parts["fixed_runtime"] + held + pages + rows
    parts["step_peak"] = parts["total"] - parts["teacher_params"] + held
    parts["resident"] = max(parts["fixed_runtime"] + held + rows, parts["step_peak"])
    parts["step_s"] = step_seconds(args, teacher, student, trainable, tokens)
    return parts


def step_seconds(args, teacher: Shape, student: Shape, trainable: int, tokens: int) -> float:
    """A step's seconds from measured rates (docs/BENCHMARKS.md): a fixed overhead (hooks, Python,
    measured on a teacher of ~0 parameters), matmul FLOPs (teacher forward, student forward and
    backward) at `gflops`, and the bytes every rank receives at `gather_gbps`: the teacher's
    all-gather each forward (the (N-1)/N it does not hold, moved `gather_copies` times), and ZeRO-2's
    gradient reduce-scatter + parameter all-gather of the trainable parameters. A model, not a
    measurement: its error on the measured runs is in docs/BENCHMARKS.md."""
    def flops(s: Shape, passes: int) -> float:
        dense = s.params() - (s.vocab + s.positions + 2) * s.hidden
        return passes * 2 * tokens * (dense + 2 * s.layers * args.seq_len * s.hidden)
    compute = (flops(teacher, 1) + flops(student, 3)) / (args.gflops * 1e9)
    n = args.world_size
    received = 0.0
    if n > 1:
        if args.teacher_stage == 3:
            received += teacher.params() * DTYPE_BYTES[args.teacher_dtype] * (n - 1) / n * args.gather_copies
        received += 2 * trainable * DTYPE_BYTES[args.student_dtype] * (n - 1) / n
    return args.step_overhead_s + compute + received / (args.gather_gbps * 1e9)


def main(argv=None) -> int:
    try:
        args = parse(argv)
        parts = plan(args)
    except UserError as e:
        print(f"hrkd-plan: {e}", file=sys.stderr)
        return EXIT_USAGE
    for k, v in parts.items():
        print(f"{k:20s} {v:10.2f} s" if k == "step_s" else f"{k:20s} {v / GIB:10.3f} GiB")
    if args.memory_gib is not None:
        fits = parts["total"] <= args.memory_gib * GIB
        print(f"fits {args.memory_gib} GiB per rank: {'yes' if fits else 'no'}")
        return 0 if fits else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
