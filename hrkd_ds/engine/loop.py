"""The episodic training loop shared by the meta-teacher and the distillation stage.

One step = one episode (a batch from every domain on every rank). The loop owns resume
(checkpoint + sampler + RNG + metrics rewind), preemption, evaluation with best-model export,
and logging; what differs between stages is only the engine's module and the optional teacher.
"""

from __future__ import annotations

import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from hrkd_ds.engine import checkpoint
from hrkd_ds.engine.distributed import DistInfo, all_reduce_sum, any_rank, barrier
from hrkd_ds.engine.evaluate import EVAL_BATCH_SIZE, evaluate_dev_test
from hrkd_ds.engine.modules import model_inputs
from hrkd_ds.engine.preemption import EXIT_PREEMPTED, PreemptionFlag
from hrkd_ds.config import StageConfig
from hrkd_ds.tracking.metrics import MetricsLog
from hrkd_ds.tracking.wandb_run import WandbRun


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is safely written; exits with EXIT_PREEMPTED."""

    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


@dataclass
class StageRun:
    """Everything one training stage needs; built by train.py."""

    role: str  # "teacher" | "student": key in results.json and the metrics' "stage"
    stage: StageConfig
    engine: Any
    sampler: Any
    collate: Callable[[list[list[int]]], dict[str, torch.Tensor]]
    dev_sets: dict[str, Any]
    test_sets: dict[str, Any]
    domains: list[str]
    pad_id: int
    out_dir: Path
    total_steps: int
    export: Callable[[Path], None]  # collective: every rank calls it, rank 0 writes
    teacher: Any = None
    eval_batch_size: int = EVAL_BATCH_SIZE
    extra_progress: dict[str, Any] = field(default_factory=dict)


def path_safe(name: str) -> str:
    """A domain name usable as one directory name (table-format domains are free text)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".")
    return safe or "domain"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _by_domain(t: torch.Tensor, domains: list[str]) -> Any:
    """(K,) -> {domain: v}; (L, K) -> [{domain: v}, ...] for readable metrics."""
    if t.dim() == 1:
        return {d: float(v) for d, v in zip(domains, t.tolist())}
    return [_by_domain(row, domains) for row in t]


def _mean_over_ranks(loss: torch.Tensor, logs: dict[str, torch.Tensor], world: int):
    """Average the step's loss and logged tensors over ranks in one collective."""
    names = sorted(logs)
    flat = torch.cat([loss.detach().float().reshape(1)] + [logs[k].float().reshape(-1) for k in names])
    all_reduce_sum(flat)
    flat /= world
    out, at = {}, 1
    for k in names:
        n = logs[k].numel()
        out[k] = flat[at:at + n].view_as(logs[k]).cpu()
        at += n
    return float(flat[0]), out


def _flat_for_wandb(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat_for_wandb(v, key + "/"))
        elif isinstance(v, list):
            flat.update(_flat_for_wandb({str(i): x for i, x in enumerate(v)}, key + "/"))
        elif isinstance(v, (int, float)):
            flat[key] = v
    return flat


class Trainer:
    """Runs one StageRun to completion (or to a preemption checkpoint)."""

    def __init__(self, run: StageRun, dist: DistInfo, metrics: MetricsLog, tracker: WandbRun,
                 preempt: PreemptionFlag, progress_bar: bool) -> None:
        self.run, self.dist, self.metrics, self.tracker, self.preempt = run, dist, metrics, tracker, preempt
        self.progress_bar = progress_bar and dist.is_main
        self.ckpt_dir = run.out_dir / "checkpoints"
        self.gas = run.engine.gradient_accumulation_steps()

    # ---- evaluation and best models -------------------------------------------------------
    def _predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.run.engine(batch, predict=True)

    def evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        r, engine = self.run, self.run.engine
        engine.eval()
        dev, test = evaluate_dev_test(self._predict, r.dev_sets, r.test_sets, r.domains, r.pad_id, self.dist.rank,
                                      self.dist.world_size, r.eval_batch_size, self.dist.device)
        engine.train()
        return dev, test

    def _record_eval(self, step: int, best: dict[str, Any]) -> None:
        dev, test = self.evaluate()
        row = {"stage": self.run.role, "step": step, "eval": {"dev": dev, "test": test}}
        self.metrics.write(row)
        self.tracker.log({f"{self.run.role}/step": step, **_flat_for_wandb({f"{self.run.role}/eval": row["eval"]})})
        if dev["average"] > best["overall"].get("dev", {}).get("average", -1.0):
            best["overall"] = {"step": step, "dev": dev, "test": test}
            self.run.export(self.run.out_dir / "model")
        for d in self.run.domains:
            if dev[d] > best["per_domain"].get(d, {}).get("dev", -1.0):
                best["per_domain"][d] = {"step": step, "dev": dev[d], "test": test[d]}
                self.run.export(self.run.out_dir / "best_by_domain" / path_safe(d))
        best["final"] = {"step": step, "dev": dev, "test": test}

    # ---- the loop --------------------------------------------------------------------------
    def _log_step(self, step: int, epoch: int, loss: torch.Tensor, logs: dict[str, torch.Tensor],
                  window: dict[str, float]) -> None:
        r = self.run
        mean_loss, mean_logs = _mean_over_ranks(loss, logs, self.dist.world_size)
        elapsed = max(time.perf_counter() - window["t0"], 1e-9)
        row: dict[str, Any] = {
            "stage": r.role, "step": step, "epoch": epoch, "loss": mean_loss,
            "lr": r.engine.get_lr()[0],
            "samples_per_s": window["samples"] * self.dist.world_size / elapsed,
            "tokens_per_s": window["tokens"] * self.dist.world_size / elapsed,
            "peak_mem_mb": _peak_memory_mb(self.dist.device),
        }
        terms = {}
        for k, v in mean_logs.items():
            if k == "weights":
                row["weights"] = v.tolist()
            elif k == "ratios":
                row["ratios"] = v.tolist()
            else:
                terms[k] = _by_domain(v, r.domains)
        row["terms"] = terms
        self.metrics.write(row)
        self.tracker.log(_flat_for_wandb({r.role: row}))
        window.update(t0=time.perf_counter(), samples=0, tokens=0)

    def _crossed(self, step: int, every: int) -> bool:
        """Did the optimizer step ending at micro-step `step` pass a multiple of `every`?"""
        return bool(every) and step // every != (step - self.gas) // every

    def _save(self, step: int, best: dict[str, Any]) -> None:
        progress = {"step": step, "sampler": self.run.sampler.state_dict(), "best": best, **self.run.extra_progress}
        checkpoint.save(self.run.engine, self.ckpt_dir, step, progress, self.dist.rank)

    def fit(self) -> dict[str, Any]:
        r, engine = self.run, self.run.engine
        progress = checkpoint.load(engine, self.ckpt_dir, self.dist.rank)
        if progress is not None:
            step, best = progress["step"], progress["best"]
            r.sampler.load_state_dict(progress["sampler"])
            self.metrics.rewind(r.role, step)
        else:
            step, best = 0, {"overall": {}, "per_domain": {}}
            self.metrics.rewind(r.role, 0)
        engine.train()
        bar = None
        if self.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=r.total_steps, initial=step, desc=r.role, dynamic_ncols=True)
        window = {"t0": time.perf_counter(), "samples": 0, "tokens": 0}
        last_eval = step if progress is not None and best.get("final", {}).get("step") == step else -1
        saved_step = step if progress is not None else -1
        if best.pop("pending_eval", None) == step and progress is not None:
            self._record_eval(step, best)
            last_eval, saved_step = step, -1
        while step < r.total_steps:
            epoch = r.sampler.state_dict().get("epoch", 0)
            for episode in r.sampler:
                batch = r.collate(episode)
                teacher_out = None
                if r.teacher is not None:
                    with torch.no_grad():
                        teacher_out = r.teacher(**model_inputs(batch), output_internals=True)
                out = engine(batch, teacher_out=teacher_out)
                engine.backward(out.loss)
                engine.step()
                step += 1
                window["samples"] += batch["input_ids"].shape[0]
                window["tokens"] += int(batch["attention_mask"].sum())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{out.loss.item():.4f}")
                if r.stage.log_every and step % r.stage.log_every == 0:
                    self._log_step(step, epoch, out.loss, out.logs, window)
                if step % self.gas:
                    continue  # only act at optimizer-step boundaries (total_steps is a multiple of gas)
                if any_rank(self.preempt.requested, self.dist.device):
                    # checkpoint first (the warning's time margin is for this); a due evaluation
                    # runs first thing after the resume, so the run's history stays identical
                    best["pending_eval"] = step if self._crossed(step, r.stage.eval_every) else None
                    self._save(step, best)
                    if bar is not None:
                        bar.close()
                    raise Preempted()
                if self._crossed(step, r.stage.eval_every):
                    self._record_eval(step, best)
                    last_eval = step
                if self._crossed(step, r.stage.save_every):
                    self._save(step, best)
                    saved_step = step
                if step >= r.total_steps:
                    break
        if last_eval != step:
            self._record_eval(step, best)
            saved_step = -1
        if bar is not None:
            bar.close()
        if saved_step != step:
            self._save(step, best)
        barrier()
        return best
