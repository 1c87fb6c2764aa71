"""The episodic training loop shared by every stage.

One step = one episode (a batch from every domain on every rank). The loop owns resume
(checkpoint + sampler + RNG + metrics rewind), preemption, evaluation with best-model export,
and logging; what differs between stages is only the engine's module and the optional teacher.
The loop knows engines and samplers only through the protocols below, so it runs in-process
against fakes in the unit tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch

from hrkd_ds import allocator
from hrkd_ds.config import StageConfig, TrainConfig
from hrkd_ds.engine import checkpoint
from hrkd_ds.engine.distributed import DistInfo, any_rank, barrier
from hrkd_ds.engine.evaluate import EVAL_BATCH_SIZE, SplitEval, evaluate_dev_test
from hrkd_ds.engine.logging_rows import Window, flat_for_wandb, step_row
from hrkd_ds.engine.nonfinite import NonFiniteGuard
from hrkd_ds.engine.preemption import EXIT_PREEMPTED, PreemptionFlag
from hrkd_ds.distill.step import StepOutput
from hrkd_ds.io import atomic_write_json
from hrkd_ds.tracking.metrics import MetricsLog
from hrkd_ds.tracking.wandb_run import WandbRun


class Engine(Protocol):
    """What the loop uses of a DeepSpeed engine."""

    module: torch.nn.Module

    def __call__(self, batch: dict[str, torch.Tensor], **kwargs: Any) -> Any: ...
    def backward(self, loss: torch.Tensor) -> Any: ...
    def step(self) -> None: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def get_lr(self) -> list[float]: ...
    def gradient_accumulation_steps(self) -> int: ...
    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict, save_latest: bool) -> Any: ...
    def load_checkpoint(self, load_dir: str, tag: str, load_module_strict: bool) -> tuple[Any, dict | None]: ...


class Sampler(Protocol):
    """What the loop uses of an episodic sampler: iterate episodes, save and restore the position."""

    def __iter__(self) -> Iterator[list[list[int]]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is safely written; exits with EXIT_PREEMPTED."""

    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


@dataclass
class StageRun:
    """Everything one training stage needs; built by the stage builders."""

    role: str  # "teacher" | "student" | ...: key in results.json and the metrics' "stage"
    stage: StageConfig
    engine: Engine
    sampler: Sampler
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
    evaluate: bool = True  # False (label-free stages): no evaluation, the final model is exported
    guard: TrainConfig = field(default_factory=TrainConfig)  # non-finite loss policy


@dataclass
class Best:
    """Best-dev evaluations so far (overall and per domain) and the latest one; checkpointed."""

    overall: dict[str, Any] = field(default_factory=dict)  # {"step", "dev": {...}, "test": {...}}
    per_domain: dict[str, dict[str, Any]] = field(default_factory=dict)  # domain -> {"step", "dev", "test"}
    final: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "per_domain": self.per_domain, "final": self.final}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Best":
        return cls(d.get("overall", {}), d.get("per_domain", {}), d.get("final", {}))


@dataclass
class Progress:
    """Where a stage stands: the step, the best models, and what is already done at this step."""

    step: int = 0
    best: Best = field(default_factory=Best)
    evaluated: bool = False  # an evaluation has run at `step`
    saved: bool = False  # a checkpoint of `step` exists
    pending_eval: bool = False  # an evaluation due at `step` was deferred by a preemption

    def checkpoint_state(self, sampler: Sampler) -> dict[str, Any]:
        return {"step": self.step, "sampler": sampler.state_dict(), "best": self.best.to_dict(),
                "pending_eval": self.pending_eval}

    @classmethod
    def restored(cls, state: dict[str, Any]) -> "Progress":
        best = Best.from_dict(state["best"])
        return cls(step=state["step"], best=best, evaluated=best.final.get("step") == state["step"], saved=True,
                   pending_eval=bool(state.get("pending_eval")))


def path_safe(name: str) -> str:
    """A domain name usable as one directory name (table-format domains are free text)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".")
    return safe or "domain"


class Trainer:
    """Runs one StageRun to completion (or to a preemption checkpoint)."""

    def __init__(self, run: StageRun, dist: DistInfo, metrics: MetricsLog, tracker: WandbRun,
                 preempt: PreemptionFlag, progress_bar: bool) -> None:
        self.run, self.dist, self.metrics, self.tracker, self.preempt = run, dist, metrics, tracker, preempt
        self.progress_bar = progress_bar and dist.is_main
        self.ckpt_dir = run.out_dir / "checkpoints"
        self.gas = run.engine.gradient_accumulation_steps()
        self.guard = NonFiniteGuard(run.guard, run.role, dist.device, self.gas)

    # ---- evaluation and best models -------------------------------------------------------
    def _predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.run.engine(batch, predict=True)

    def evaluate(self) -> tuple[SplitEval, SplitEval]:
        r, engine = self.run, self.run.engine
        engine.eval()
        dev, test = evaluate_dev_test(self._predict, r.dev_sets, r.test_sets, r.domains, r.pad_id, self.dist.rank,
                                      self.dist.world_size, r.eval_batch_size, self.dist.device)
        engine.train()
        return dev, test

    def _record_eval(self, p: Progress) -> None:
        r = self.run
        dev_eval, test_eval = self.evaluate()
        dev, test = dev_eval.accuracy, test_eval.accuracy
        row = {"stage": r.role, "step": p.step, "eval": {"dev": dev, "test": test}}
        self.metrics.write(row)
        self.tracker.log({f"{r.role}/step": p.step, **flat_for_wandb({f"{r.role}/eval": row["eval"]})})
        best = p.best
        if dev["average"] > best.overall.get("dev", {}).get("average", -1.0):
            self.guard.check_weights(r.engine.module, p.step, "export")
            best.overall = {"step": p.step, "dev": dev, "test": test}
            r.export(r.out_dir / "model")
            if self.dist.is_main:  # the best model's own predictions, for paired comparisons between runs
                atomic_write_json(r.out_dir / "predictions.json",
                                  {"step": p.step, "test": test_eval.predictions, "dev": dev_eval.predictions})
        for d in r.domains:
            if dev[d] > best.per_domain.get(d, {}).get("dev", -1.0):
                self.guard.check_weights(r.engine.module, p.step, "export")
                best.per_domain[d] = {"step": p.step, "dev": dev[d], "test": test[d]}
                r.export(r.out_dir / "best_by_domain" / path_safe(d))
        best.final = {"step": p.step, "dev": dev, "test": test}
        p.evaluated, p.saved = True, False

    def _save(self, p: Progress) -> None:
        self.guard.check_weights(self.run.engine.module, p.step, "checkpoint")
        checkpoint.save(self.run.engine, self.ckpt_dir, p.step, p.checkpoint_state(self.run.sampler), self.dist.rank)
        p.saved = True

    def _crossed(self, step: int, every: int) -> bool:
        """Did the optimizer step ending at micro-step `step` pass a multiple of `every`?"""
        return bool(every) and step // every != (step - self.gas) // every

    def _resume(self) -> Progress:
        state = checkpoint.load(self.run.engine, self.ckpt_dir, self.dist.rank)
        if state is None:
            self.metrics.rewind(self.run.role, 0)
            return Progress()
        self.run.sampler.load_state_dict(state["sampler"])
        self.metrics.rewind(self.run.role, state["step"])
        return Progress.restored(state)

    def _train_step(self, batch: dict[str, torch.Tensor], step: int) -> StepOutput | None:
        """Forward, backward, optimizer step; None when a non-finite loss made every rank skip it."""
        r, engine = self.run, self.run.engine
        done = (step - 1) // self.gas * self.gas / r.total_steps  # share of the stage before this optimizer step
        out = engine(batch, teacher=r.teacher, progress=done)  # the module's forward is the whole step (distill/step.py)
        out.loss = self.guard.loss(out.loss, step)
        if not self.guard.step_ok(out.loss, step):
            return None
        engine.backward(out.loss)
        engine.step()
        return out

    # ---- the loop --------------------------------------------------------------------------
    def fit(self) -> Best:
        r = self.run
        p = self._resume()
        if p.pending_eval and r.evaluate:  # an evaluation deferred by the preemption runs first: the history stays identical
            p.pending_eval = False
            self._record_eval(p)
        r.engine.train()
        bar = self._bar(p.step)
        window = Window()
        try:
            while p.step < r.total_steps:
                epoch = r.sampler.state_dict().get("epoch", 0)
                for episode in r.sampler:
                    batch = r.collate(episode)
                    out = self._train_step(batch, p.step + 1)
                    p.step += 1
                    allocator.after_step(p.step)  # train.malloc_trim_every (hrkd_ds/allocator.py)
                    p.evaluated = p.saved = False
                    window.add(batch)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{out.loss.item():.4f}" if out is not None else "skipped")
                    if out is None:
                        self.metrics.write({"stage": r.role, "step": p.step, "skipped": "non-finite loss"})
                    elif r.stage.log_every and p.step % r.stage.log_every == 0:
                        self._log(p.step, epoch, out, window)
                    if p.step % self.gas:
                        continue  # only act at optimizer-step boundaries (total_steps is a multiple of gas)
                    if any_rank(self.preempt.requested, self.dist.device):
                        # checkpoint first (the warning's time margin is for this); a due evaluation
                        # runs first thing after the resume
                        p.pending_eval = r.evaluate and self._crossed(p.step, r.stage.eval_every)
                        self._save(p)
                        raise Preempted()
                    if r.evaluate and self._crossed(p.step, r.stage.eval_every):
                        self._record_eval(p)
                    if self._crossed(p.step, r.stage.save_every):
                        self._save(p)
                    if p.step >= r.total_steps:
                        break
        finally:
            if bar is not None:
                bar.close()
        if not r.evaluate:
            self.guard.check_weights(r.engine.module, p.step, "export")
            r.export(r.out_dir / "model")
        elif not p.evaluated:
            self._record_eval(p)
        if not p.saved:
            self._save(p)
        barrier()
        return p.best

    def _log(self, step: int, epoch: int, out: StepOutput, window: Window) -> None:
        r = self.run
        row = step_row(r.role, step, epoch, out, r.engine, r.domains, window, self.dist)
        self.metrics.write(row)
        self.tracker.log(flat_for_wandb({r.role: row}))
        window.reset()

    def _bar(self, initial: int):
        if not self.progress_bar:
            return None
        from tqdm import tqdm  # lazy: only rank 0 with a progress bar needs it

        return tqdm(total=self.run.total_steps, initial=initial, desc=self.run.role, dynamic_ncols=True)
