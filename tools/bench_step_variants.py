"""The variants tools/bench_step.py times: the same teacher and student (+ fused HRKD loss) built
once, then one step function per variant (plain PyTorch, the trainer's DeepSpeed engines at a ZeRO
stage with or without the ZeRO-3 teacher engine, the reference style), each from its own copy so
every variant starts from the same weights with its own optimizer state."""

from __future__ import annotations

import copy

import torch

from hrkd_ds.config import DistillConfig, GraphConfig, ModelConfig, StageConfig
from hrkd_ds.config.deepspeed import read_ds_config, with_batch_sizes
from hrkd_ds.distill import ReferenceDistillLoss, RelationalDistillLoss, resolve_layer_map
from hrkd_ds.distill.methods import DistillModule
from hrkd_ds.engine.student import adamw as trainer_adamw, build_student_engine, param_groups
from hrkd_ds.engine.teacher import build_teacher_engine, teacher_ds_config
from hrkd_ds.models import build_model
from hrkd_ds.models.encoder import EncoderOutputs

C = 2  # labels per domain
ALL_VARIANTS = ["plain", "zero0", "zero2", "zero3", "zero2/t-zero3", "zero3/t-zero3", "zero2/t-zero3-bf16",
                "zero2/t-zero3-padded", "reference"]
TEACHER_JSON = {"t-zero3": "ds_configs/teacher_zero3.json", "t-zero3-bf16": "ds_configs/teacher_zero3_bf16.json"}


def layer_map(student, teacher) -> list[int]:
    """The trainer's layer map (distill/layer_map.py): uniform where the depths divide. Where they do
    not (--sweep's 6-layer teacher under the 4-layer student), the trainer asks for an explicit
    `distill.layer_map`: this passes the one a user would write, evenly spaced teacher layers
    ([2, 3, 4, 6] there), and resolve_layer_map checks it."""
    s, t = student.num_layers, teacher.num_layers
    explicit = None if t % s == 0 else [round((i + 1) * t / s) for i in range(s)]
    return resolve_layer_map(s, t, explicit)


def make_batch(a, gen) -> dict[str, torch.Tensor]:
    N, T = a.domains * a.batch, a.seq
    ids = torch.randint(1, a.vocab, (N, T), generator=gen)
    mask = (torch.arange(T)[None] < torch.randint(a.min_length or T // 4, T + 1, (N, 1), generator=gen)).long()
    batch = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
             "domain_ids": torch.arange(a.domains).repeat_interleave(a.batch), "labels": torch.randint(0, C, (N,), generator=gen)}
    return {k: v.to(a.device) for k, v in batch.items()}


def sync(a) -> None:
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()


def inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


def build_teacher(a, layers: int, hidden: int):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64, intermediate_size=4 * hidden, dropout=0.1)
    return build_model(cfg, a.domains, C, a.vocab, 0, a.seq, attention="probs").to(a.device).eval()


def build_pair(a, layers: int, hidden: int):
    """Teacher and the DistillModule (student + fused loss) every variant starts from."""
    teacher = build_teacher(a, layers, hidden)
    cfg = ModelConfig(hidden_size=a.student_hidden, num_layers=a.student_layers, num_heads=a.student_heads,
                      intermediate_size=a.student_intermediate, dropout=0.1)
    student = build_model(cfg, a.domains, C, a.vocab, 0, a.seq, attention="probs").to(a.device)
    loss = RelationalDistillLoss.from_config(student, teacher, a.domains, GraphConfig(), DistillConfig(layer_map=layer_map(student, teacher)))
    loss.request_internals(student, teacher)
    return teacher, DistillModule(student, loss.to(a.device), a.domains)


def concat_outputs(outs: list[EncoderOutputs]) -> EncoderOutputs:
    """Per-domain teacher outputs -> one domain-major EncoderOutputs."""
    cat = lambda xs: torch.cat(list(xs))  # noqa: E731
    return EncoderOutputs(logits=cat(o.logits for o in outs), all_logits=cat(o.all_logits for o in outs),
                          embeddings=cat(o.embeddings for o in outs),
                          hidden_states=tuple(map(cat, zip(*(o.hidden_states for o in outs)))),
                          attentions=tuple(map(cat, zip(*(o.attentions for o in outs)))))


def adamw(module):
    """The trainer's optimizer (fused AdamW where torch has it), so every variant steps alike."""
    return trainer_adamw(param_groups(module, 0.01), 5e-5)


def plain_step(teacher, module):
    """The trainer's math without DeepSpeed."""
    opt = adamw(module)
    module.train()

    def step(batch):
        module(batch, teacher=teacher).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def reference_step(a, teacher, module):
    """K full teacher copies, each on its own domain's rows, every layer's internals; loop loss."""
    teachers = [copy.deepcopy(teacher) for _ in range(a.domains)]
    student = module.model
    for m in (*teachers, student):
        m.padding_free = False
    loss = ReferenceDistillLoss.from_config(student, teacher, a.domains, GraphConfig(), DistillConfig(layer_map=layer_map(student, teacher)))
    for t in teachers:
        t.select_internals()
    student.select_internals()
    ref = DistillModule(student, loss, a.domains).train()
    opt = adamw(ref)
    rows = [slice(d * a.batch, (d + 1) * a.batch) for d in range(a.domains)]

    def per_domain_teachers(output_internals: bool = True, **batch_inputs):  # each copy on its own domain's rows,
        return concat_outputs([t(**{k: v[r] for k, v in batch_inputs.items()}, output_internals=output_internals)
                               for t, r in zip(teachers, rows)])  # one domain-major output

    def step(batch):
        ref(batch, teacher=per_domain_teachers).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def teacher_engine(teacher, json_path: str, micro: int):
    return build_teacher_engine(copy.deepcopy(teacher), teacher_ds_config(read_ds_config(json_path), micro, 1))


def engine_step(a, teacher, module, variant: str):
    """`zero<S>` or `zero<S>/<teacher>`: the trainer's engines, as hrkd_ds/engine/loop.py steps them."""
    stage, _, t_kind = variant.partition("/")
    micro = a.domains * a.batch
    if t_kind.endswith("-padded"):
        t_kind = t_kind.removesuffix("-padded")
        teacher = copy.deepcopy(teacher)
        teacher.padding_free = module.model.padding_free = False
    if t_kind:
        teacher = teacher_engine(teacher, TEACHER_JSON[t_kind], micro)
    path = f"ds_configs/{stage}.json"
    engine = build_student_engine(module, with_batch_sizes(read_ds_config(path), micro, 1, path), StageConfig(), 1000)
    engine.train()

    def step(batch):
        out = engine(batch, teacher=teacher)
        engine.backward(out.loss)
        engine.step()
    return step


PROCESS_LINEAR = torch.nn.functional.linear  # before any ZeRO-3 engine replaced it


def with_linear(step, linear):
    """Run `step` under the F.linear its own process would have: a ZeRO-3 engine with DeepSpeed's
    `memory_efficient_linear` replaces it process-wide, which would otherwise reach every variant
    built after it (the plain loop and the reference style included)."""
    def run(batch):
        torch.nn.functional.linear = linear
        try:
            step(batch)
        finally:
            torch.nn.functional.linear = PROCESS_LINEAR
    return run


def make_steps(a, variants: list[str], layers: int, hidden: int):
    teacher, module = build_pair(a, layers, hidden)
    steps = {}
    for v in variants:
        fresh = copy.deepcopy(module)  # same starting weights, own optimizer state
        torch.nn.functional.linear = PROCESS_LINEAR
        if v == "plain":
            step = plain_step(teacher, fresh)
        elif v == "reference":
            step = reference_step(a, teacher, fresh)
        else:
            step = engine_step(a, teacher, fresh, v)
        steps[v] = with_linear(step, torch.nn.functional.linear)
    torch.nn.functional.linear = PROCESS_LINEAR
    return teacher, module, steps
