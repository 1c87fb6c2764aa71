"""What a finished stage leaves for people: a model card in the export, the student's int8 export
beside it (student/model-int8) with the compression report, and the run report with its plots
(also sent to W&B). Written by the main rank only."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from hrkd_ds.distill.step import model_inputs
from hrkd_ds.engine.compression import compression_report
from hrkd_ds.engine.evaluate import EVAL_BATCH_SIZE, eval_batch
from hrkd_ds.engine.export import export_int8
from hrkd_ds.models.loading import load_exported
from hrkd_ds.stages.context import StageContext
from hrkd_ds.tracking.model_card import write_model_card
from hrkd_ds.tracking.report import write_report

COMPRESSION_REPEATS = 5  # per batch size and model; the grid times every student, keep it short


INT8_DIR = "model-int8"  # beside the fp32 export: student/model-int8


def _base(model_cfg) -> str:
    if model_cfg.init == "general":
        return "the general-distillation export of the same run (general/model)"
    if model_cfg.init == "teacher_layers":
        return f"teacher layers {list(model_cfg.teacher_layers)}"
    if model_cfg.init == "teacher_select":
        return f"weights selected from teacher layers {list(model_cfg.teacher_layers)}"
    if model_cfg.pretrained:
        return f"a pretrained model ({Path(model_cfg.pretrained).name})"  # the name, not a local path
    return "random init"


def _hub_id(pretrained: str) -> str | None:
    """The Hub id a local pretrained directory records (config.json `_name_or_path`), if it is one."""
    try:
        name = json.loads((Path(pretrained) / "config.json").read_text()).get("_name_or_path", "")
    except (OSError, ValueError):
        return None
    return name if isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~")) else None


def _base_model(ctx: StageContext, model_cfg) -> str | None:
    source = model_cfg.pretrained or (ctx.cfg.teacher.pretrained if model_cfg.from_teacher else "")
    return _hub_id(source) if source else None


def _dataset(cfg) -> str:
    return f"{cfg.data.format} (shipped sample)" if not cfg.data.path else f"{cfg.data.format} ({Path(cfg.data.path).name})"


@torch.no_grad()
def local_accuracy(model, split_sets: dict, domains: list[str], pad_id: int) -> dict[str, float]:
    """Per-domain accuracy (+ "average") on this process alone, on CPU: the int8 model is
    evaluated by the main rank only, so no collective may run (engine/evaluate.py's does)."""
    acc = {}
    for k, d in enumerate(domains):
        data, hits = split_sets[d], 0
        for start in range(0, len(data), EVAL_BATCH_SIZE):
            batch = eval_batch(data, list(range(start, min(start + EVAL_BATCH_SIZE, len(data)))), pad_id, k, torch.device("cpu"))
            hits += int((model(**model_inputs(batch)).logits.argmax(-1) == batch["labels"]).sum())
        acc[d] = hits / len(data) if len(data) else 0.0
    acc["average"] = sum(acc.values()) / len(domains)
    return acc


def _card_compression(rep: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The card's (this model, teacher) pairs from a compression report (latency at batch 1)."""
    s, t = rep["student"], rep["teacher"]
    first = next(iter(s["latency_ms"]))
    return {"params": (s["params"], t["params"]), "size_bytes": (s["size_bytes"], t["size_bytes"]),
            "latency_ms": (s["latency_ms"][first], t["latency_ms"][first])}


def measure_compression(ctx: StageContext, student_dir: Path, teacher_dir: Path) -> dict[str, Any] | None:
    """Student vs teacher size, CPU latency (batch 1 and 32) and accuracy retained, into results;
    the student's int8 export is written beside it, its test accuracy measured on the quantized
    model (results["student"]["int8"]) and timed the same way."""
    if not (ctx.dist.is_main and ctx.cfg.tracking.compression):
        return None
    int8_dir = export_int8(student_dir, student_dir.with_name(INT8_DIR))
    int8 = load_exported(int8_dir, ctx.cfg.distill.attention)
    test = local_accuracy(int8, ctx.split_sets("test"), ctx.domains, ctx.tokenizer.pad_token_id)
    ctx.results.setdefault("student", {})["int8"] = {"test": test, "model_dir": str(int8_dir)}
    return compression_report(student_dir, teacher_dir, seq_len=ctx.cfg.data.max_seq_len,
                              repeats=COMPRESSION_REPEATS, results=ctx.results, int8_dir=int8_dir)


def _card_int8(rep: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    i, s = rep["int8"], rep["student"]
    return {"path": f"../{INT8_DIR}", "size_bytes": i["size_bytes"], "latency_ms": i["latency_ms"], "test": i.get("test"),
            "fp32": {"size_bytes": s["size_bytes"], "latency_ms": s["latency_ms"], "test": results.get("test")}}


def _int8_info(info: dict[str, Any], rep: dict[str, Any]) -> dict[str, Any]:
    """The int8 export's own card: its accuracy, its size and latency against the teacher."""
    i, t = rep["int8"], rep["teacher"]
    first = next(iter(i["latency_ms"]))
    return {**info, "results": {"test": i["test"]} if i.get("test") else None, "int8": None,
            "compression": {"size_bytes": (i["size_bytes"], t["size_bytes"]), "latency_ms": (i["latency_ms"][first], t["latency_ms"][first])}}


def write_card(ctx: StageContext, role: str, method: str, model_cfg, compression: dict[str, Any] | None = None) -> None:
    model_dir = ctx.run_dir.stage_dir(role) / "model"
    if not ctx.dist.is_main or not (model_dir / "config.json").is_file():
        return
    info: dict[str, Any] = {
        "role": role, "method": method, "base": _base(model_cfg), "base_model": _base_model(ctx, model_cfg),
        "dataset": _dataset(ctx.cfg), "results": ctx.results.get(role), "max_seq_len": ctx.cfg.data.max_seq_len,
        "command": shlex.join(["python", *sys.argv]), "run_dir": str(ctx.run_dir.path),
    }
    if compression is not None:
        info["compression"] = _card_compression(compression)
        t = compression["teacher"]
        info["teacher"] = {"layers": t["layers"], "hidden": t["hidden_size"]}
        if compression.get("int8"):
            info["int8"] = _card_int8(compression, ctx.results.get(role) or {})
            write_model_card(model_dir.with_name(INT8_DIR), _int8_info(info, compression))
    write_model_card(model_dir, info)


def write_run_report(ctx: StageContext) -> None:
    """report.md and PNGs for every stage so far; the PNGs also go to W&B."""
    if not (ctx.dist.is_main and ctx.cfg.tracking.plot):
        return
    roles = [r for r in ("teacher", "student") if r in ctx.results]
    for png in write_report(ctx.run_dir.path, ctx.metrics.rows(), ctx.results, ctx.domains, roles):
        ctx.tracker.log_image(f"report/{png.stem}", png)
