"""What hrkd-plan is given: the encoders' shapes (LAYERSxHIDDENxINTERMEDIATE[xVOCAB] text, a model
directory's config.json, or a run's YAML with its DeepSpeed JSONs), the measured rates the model
uses as defaults, and the command line that gathers them (hrkd_ds/plan.py computes the bytes).

No torch here either: the config reader and the DeepSpeed JSON helpers are imported lazily, by the
functions that read a run config, so the planner and tools/bench_big_teacher.py's refusal start
nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from hrkd_ds.errors import UserError

DESCRIPTION = "hrkd-plan: per-rank bytes of a distillation run before submitting it (issue 30 item 3)."  # --help's
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
FIXED_GIB = 0.47  # measured: RSS of a rank after imports and the gloo process group, before any model
ENGINE_GIB = 0.08  # measured: what two DeepSpeed engines and their first steps add for a model of ~0 parameters
GFLOPS = 20.0  # measured: fp32 matmul rate of one rank, one thread, BERT shapes at 64 tokens (docs/BENCHMARKS.md)
GATHER_GBPS = 0.2  # measured: GB/s one of 2 gloo ranks receives in a 64 MiB all-gather, loopback, 2-core CPU
STEP_OVERHEAD_S = 0.1  # measured: a distillation step of a ~0-parameter teacher and student (hooks, Python)


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


def shape_from_dir(path: str, field: str) -> Shape:
    """Shape of an exported model (RUN/teacher/model, a random teacher): its config.json."""
    cfg_file = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
        return Shape(int(cfg["num_hidden_layers"]), int(cfg["hidden_size"]), int(cfg["intermediate_size"]),
                     int(cfg["vocab_size"]), int(cfg.get("max_position_embeddings", 512)))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{field}: cannot read a BERT shape from {cfg_file} ({type(err).__name__}: {err})") from None


def teacher_shapes(args) -> tuple[Shape, Shape]:
    """Teacher and student shapes from LxHxI[xV] text or a model directory's config.json."""
    for name in ("classes", "max_positions"):
        if getattr(args, name) <= 0:
            raise UserError(f"{name}: must be positive, got {getattr(args, name)}")
    out = args.domains * args.classes
    shapes = []
    for role in ("teacher", "student"):
        text, where = getattr(args, role), getattr(args, f"{role}_dir")
        if (text is None) == (where is None):
            raise UserError(f"{role}: give exactly one of --{role} LxHxI[xV] or --{role}-dir DIR")
        s = parse_shape(text, role) if text is not None else shape_from_dir(where, f"{role}_dir")
        positions = s.positions if where is not None else args.max_positions
        shapes.append(Shape(s.layers, s.hidden, s.intermediate, s.vocab, positions, out))
    return shapes[0], shapes[1]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hrkd-plan", description=DESCRIPTION)
    ap.add_argument("--config", help="a run's YAML (train.py's --config): shapes, domains, lengths, batch, teacher JSON")
    ap.add_argument("--deepspeed", default="ds_configs/zero2.json", help="with --config: the student's DeepSpeed JSON")
    ap.add_argument("--teacher", help="LAYERSxHIDDENxINTERMEDIATE[xVOCAB]")
    ap.add_argument("--student", help="LAYERSxHIDDENxINTERMEDIATE[xVOCAB]")
    ap.add_argument("--teacher-dir", dest="teacher_dir", help="a model directory: shape from its config.json")
    ap.add_argument("--student-dir", dest="student_dir")
    ap.add_argument("--world-size", dest="world_size", type=int, default=1)
    ap.add_argument("--teacher-stage", dest="teacher_stage", type=int, default=3)
    ap.add_argument("--student-stage", dest="student_stage", type=int, default=2)
    ap.add_argument("--teacher-dtype", dest="teacher_dtype", choices=sorted(DTYPE_BYTES), default="fp32")
    ap.add_argument("--student-dtype", dest="student_dtype", choices=sorted(DTYPE_BYTES), default="fp32")
    ap.add_argument("--loss", choices=("hrkd", "no-graph", "none"), default="hrkd",
                    help="trainable loss parameters trained with the student: HRKD's projections + graph (hrkd), "
                         "projections only (no-graph), none")
    ap.add_argument("--graph-attention", dest="graph_attention", choices=("gat", "gatv2"), default="gat",
                    help="the graph's attention (graph.attention): gatv2 has more parameters")
    ap.add_argument("--pooled", action="store_true",
                    help="the pooled term's projection W_p trains too (distill.terms.pool.weight > 0)")
    ap.add_argument("--offload-teacher", dest="offload_teacher", action="store_true")
    ap.add_argument("--batch-per-domain", dest="batch_per_domain", type=int, default=8)
    ap.add_argument("--domains", type=int, default=4)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--max-positions", dest="max_positions", type=int, default=512)
    ap.add_argument("--seq-len", dest="seq_len", type=int, default=128)
    ap.add_argument("--max-live-parameters", dest="max_live_parameters", type=int, default=1_000_000_000)
    ap.add_argument("--prefetch-bucket", dest="prefetch_bucket", type=int, default=50_000_000)
    ap.add_argument("--fixed-gib", dest="fixed_gib", type=float, default=FIXED_GIB,
                    help="measured per-rank runtime cost (torch, DeepSpeed, gloo)")
    ap.add_argument("--engine-gib", dest="engine_gib", type=float, default=ENGINE_GIB,
                    help="measured per-rank cost of the engines themselves")
    ap.add_argument("--gather-copies", dest="gather_copies", type=float, default=2.0,
                    help="copies of the gathered teacher parameters alive at once (gloo on CPU 2, measured; NCCL 1, assumed)")
    ap.add_argument("--gflops", type=float, default=GFLOPS, help="measured matmul rate per rank")
    ap.add_argument("--step-overhead-s", dest="step_overhead_s", type=float, default=STEP_OVERHEAD_S)
    ap.add_argument("--gather-gbps", dest="gather_gbps", type=float, default=GATHER_GBPS,
                    help="measured all-gather bandwidth per rank, GB/s")
    ap.add_argument("--memory-gib", dest="memory_gib", type=float, default=None)
    return ap


def _shape_text(s: Shape) -> str:
    return f"{s.layers}x{s.hidden}x{s.intermediate}x{s.vocab}"


def _export_dir(path: str) -> str:
    """A finished run directory's teacher export, or the directory itself (an HF/hrkd export)."""
    run_export = Path(path) / "teacher" / "model"
    return str(run_export) if (run_export / "config.json").is_file() else path


def _run_vocab(cfg) -> int:
    if cfg.tokenizer.kind == "sentencepiece":
        return cfg.tokenizer.vocab_size
    return shape_from_dir(cfg.tokenizer.path, "tokenizer.path").vocab


def _ds_settings(path: str, role: str) -> dict:
    """Stage, dtype, offload and the ZeRO-3 gather knobs a DeepSpeed JSON sets."""
    from hrkd_ds.config.deepspeed import compute_precision, read_ds_config, zero_stage

    ds = read_ds_config(path)
    zero = ds.get("zero_optimization", {})
    out = {f"{role}_stage": zero_stage(ds), f"{role}_dtype": compute_precision(ds)}
    if role == "teacher":
        out["offload_teacher"] = zero.get("offload_param", {}).get("device", "none") in ("cpu", "nvme")
        for key, name in (("stage3_max_live_parameters", "max_live_parameters"), ("stage3_prefetch_bucket_size", "prefetch_bucket")):
            if key in zero:
                out[name] = int(zero[key])
    return out


def loss_kind(method: str, graph_enabled: bool) -> str:
    """--loss for a run: which trainable loss parameters its method builds (distill/methods.py: only
    `hrkd` keeps its graph; every other teacher method has the projections, used or not; `none` has
    no loss; tests/test_plan.py holds this equal to the built loss)."""
    if method == "none":
        return "none"
    return "hrkd" if method == "hrkd" and graph_enabled else "no-graph"


def config_defaults(path: str, student_ds: str, shapes: bool) -> dict:
    """What a run config (YAML, as train.py reads it) says about the planner's inputs: shapes
    (pretrained or teacher_from directories read from their config.json), domains, sequence
    length, batch per domain, the loss parameters its method builds, and both DeepSpeed JSONs' stage / dtype / offload / gather knobs."""
    from hrkd_ds.config import load_config

    cfg = load_config(path)
    pool = cfg.distill.terms.get("pool")
    d = {"seq_len": cfg.data.max_seq_len, "max_positions": cfg.data.max_seq_len,
         "batch_per_domain": cfg.distill_train.batch_per_domain,
         "loss": loss_kind(cfg.distill.method, cfg.graph.enabled), "pooled": bool(pool and pool.weight),
         "graph_attention": cfg.graph.attention}
    if cfg.data.domains:
        d["domains"] = len(cfg.data.domains)
    if shapes:
        t_dir = _export_dir(cfg.teacher_from) if cfg.teacher_from else cfg.teacher.pretrained
        t, s = cfg.teacher, cfg.student
        teacher = (shape_from_dir(t_dir, "teacher_from" if cfg.teacher_from else "teacher.pretrained") if t_dir
                   else Shape(t.num_layers, t.hidden_size, t.intermediate_size, _run_vocab(cfg)))
        if s.pretrained:
            student = shape_from_dir(s.pretrained, "student.pretrained")
        elif s.init == "teacher_layers":  # teacher width, the listed layers
            student = Shape(len(s.teacher_layers), teacher.hidden, teacher.intermediate, teacher.vocab)
        else:
            student = Shape(s.num_layers, s.hidden_size, s.intermediate_size, teacher.vocab)
        d.update(teacher=_shape_text(teacher), student=_shape_text(student))
    d.update(_ds_settings(cfg.distill.teacher_deepspeed, "teacher"))
    d.update(_ds_settings(student_ds, "student"))
    return d


def parse(argv=None) -> argparse.Namespace:
    """Flags, over what --config (and --deepspeed, the student's JSON) say."""
    ap = build_parser()
    first, _ = ap.parse_known_args(argv)
    if first.config:
        given = set(argv if argv is not None else sys.argv[1:])
        shapes = not given & {"--teacher", "--teacher-dir", "--student", "--student-dir"}
        ap.set_defaults(**config_defaults(first.config, first.deepspeed, shapes))
    return ap.parse_args(argv)
