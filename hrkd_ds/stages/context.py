"""What every stage of one invocation shares: config, process group, data, run directory, trackers.

`StageContext.setup` does the checks that must pass before anything is written (resume
compatibility, data, every stage's settings) on a `PreparedRun`, then writes the run files and
builds the complete context; `train_stage` builds an engine, sampler and loop for one stage and
returns its accuracies.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrkd_ds.config import Config, StageConfig, check_resume_config, to_dict
from hrkd_ds.config.deepspeed import read_ds_config, with_batch_sizes
from hrkd_ds.config.schema import SCHEDULE_OF_ROLE
from hrkd_ds.data.collate import collate_episode
from hrkd_ds.data.sampler import EpisodicDomainSampler
from hrkd_ds.engine.distributed import DistInfo, barrier
from hrkd_ds.engine.evaluate import EVAL_BATCH_SIZE, evaluate_dev_test
from hrkd_ds.engine.export import make_exporter
from hrkd_ds.engine.loop import StageRun, Trainer
from hrkd_ds.engine.preemption import PreemptionFlag
from hrkd_ds.distill.step import model_inputs
from hrkd_ds.engine.student import build_student_engine
from hrkd_ds.engine.teacher import teacher_ds_config
from hrkd_ds.errors import UserError
from hrkd_ds.models.checks import check_model_sources, check_tokenizer_matches
from hrkd_ds.models.build import build_model
from hrkd_ds.models.encoder import MultiDomainClassifier
from hrkd_ds.stages.checks import check_stages
from hrkd_ds.stages.data_prep import prepare_data, resolve_teacher_dir
from hrkd_ds.stages.run_dir import RunDir
from hrkd_ds.tracking.metrics import MetricsLog
from hrkd_ds.tracking.wandb_run import WandbRun, resolve_mode


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class PreparedRun:
    """What the checks and the stages read of one invocation, complete once the data is prepared:
    config, process group, run directory, teacher source, tokenizer and tokenized data."""

    cfg: Config
    ds_cfg: dict[str, Any]
    ds_source: str  # where ds_cfg came from, for error messages
    dist: DistInfo
    run_dir: RunDir
    preempt: PreemptionFlag
    teacher_dir: Path | None  # teacher_from's model directory, if any
    raw: Any  # data.RawSplits
    tokenizer: Any
    data: Any  # data.TokenizedSplits

    @property
    def domains(self) -> list[str]:
        return list(self.raw.domains)

    @property
    def labels(self) -> list[str]:
        return list(self.raw.labels)

    @property
    def K(self) -> int:
        return len(self.domains)

    def micro_batch(self, stage: StageConfig) -> int:
        return stage.batch_per_domain * self.K

    def teacher_ds(self, stage: StageConfig) -> dict[str, Any]:
        """The frozen teacher's DeepSpeed config (distill.teacher_deepspeed) at `stage`'s micro batch,
        for every stage that runs a teacher (general, distill, eval)."""
        return teacher_ds_config(read_ds_config(self.cfg.distill.teacher_deepspeed), self.micro_batch(stage), self.dist.world_size)

    def sampler(self, stage: StageConfig) -> EpisodicDomainSampler:
        epoch_domain = None
        if stage.epoch_policy == "domain":
            if stage.epoch_domain not in self.domains:
                key = next(k for k in SCHEDULE_OF_ROLE.values() if getattr(self.cfg, k) is stage)
                raise UserError(f"config field '{key}.epoch_domain': {stage.epoch_domain!r} is not one of {self.domains}")
            epoch_domain = self.domains.index(stage.epoch_domain)
        return EpisodicDomainSampler(
            self.data.train_sizes, stage.batch_per_domain, rank=self.dist.rank, world_size=self.dist.world_size,
            seed=self.cfg.seed, epoch_policy=stage.epoch_policy, epoch_domain=epoch_domain,
            steps_per_epoch=stage.steps_per_epoch or None,
        )

    def collate_fn(self):
        train = [self.data.splits["train"][d] for d in self.domains]
        pad_id, device = self.tokenizer.pad_token_id, self.dist.device

        def collate(episode):
            batch = collate_episode(train, episode, pad_id, self.cfg.data.pad_to, self.cfg.data.max_seq_len)
            return {k: v.to(device) for k, v in batch.items()}

        return collate

    def split_sets(self, split: str) -> dict[str, Any]:
        return {d: self.data.splits[split][d] for d in self.domains}

    def build_model(self, model_cfg, teacher=None) -> MultiDomainClassifier:
        """A teacher or student for this run's domains, labels, tokenizer and sequence length."""
        return build_model(model_cfg, self.K, len(self.labels), len(self.tokenizer), self.tokenizer.pad_token_id,
                           self.cfg.data.max_seq_len, attention=self.cfg.distill.attention, teacher=teacher,
                           domains=self.domains, labels=self.labels)


def data_cache_dir(cfg: Config, run_dir: RunDir) -> str:
    """`data.cache_dir`, or `.hrkd_cache` beside the run directory (shared between runs)."""
    return cfg.data.cache_dir or str(run_dir.path.resolve().parent / ".hrkd_cache")


@dataclass
class StageContext(PreparedRun):
    """Shared state of one invocation, built complete by `setup` (checks, data, then the run files,
    metrics, results and tracker), used by every stage runner."""

    metrics: MetricsLog
    results: dict[str, Any]  # results.json as far as it is written; stages add their role's entry
    tracker: WandbRun

    @classmethod
    def setup(cls, cfg: Config, ds_cfg: dict[str, Any], ds_source: str, dist: DistInfo) -> "StageContext":
        """Checks, data and run files, in that order: bad input is refused before anything is written."""
        run_dir, preempt = RunDir(cfg.output_dir, dist.is_main), PreemptionFlag().install()
        check_resume_config(cfg, ds_cfg, run_dir.saved_config)
        teacher_dir = resolve_teacher_dir(cfg)
        check_model_sources(cfg, teacher_dir)  # before any loader meets a bad directory
        cache_dir = data_cache_dir(cfg, run_dir)
        raw, tokenizer, data = prepare_data(cfg, dist, teacher_dir, cache_dir)
        prepared = PreparedRun(cfg, ds_cfg, ds_source, dist, run_dir, preempt, teacher_dir, raw, tokenizer, data)
        for role in ("teacher", "student"):
            if getattr(cfg, role).pretrained:
                check_tokenizer_matches(getattr(cfg, role).pretrained, tokenizer, f"{role}.pretrained")
        check_stages(prepared)
        barrier()  # every rank has compared configs before rank 0 overwrites
        run_dir.write_run_files(cfg, ds_cfg, prepared.domains, prepared.labels)
        tracker = WandbRun(dist.is_main, cfg.tracking.wandb_project, resolve_mode(cfg.tracking.wandb_mode),
                           str(run_dir.path), run_dir.path.name, to_dict(cfg), run_dir.wandb_id())
        run_dir.save_wandb_id(tracker.id)
        return cls(**{f.name: getattr(prepared, f.name) for f in fields(PreparedRun)},
                   metrics=MetricsLog(run_dir.path / "metrics.jsonl", enabled=dist.is_main),
                   results=run_dir.load_results(), tracker=tracker)

    def save_results(self) -> None:
        self.run_dir.save_results(self.results)

    def train_stage(self, role: str, module: torch.nn.Module, stage: StageConfig, teacher=None,
                    evaluate: bool = True) -> dict[str, Any]:
        """Engine + sampler + loop for one stage; returns the best/final accuracies."""
        sampler = self.sampler(stage)
        total = math.ceil(stage.epochs * sampler.steps_per_epoch)
        total = min(total, stage.max_steps) if stage.max_steps else total
        ds_cfg = with_batch_sizes(self.ds_cfg, self.micro_batch(stage), self.dist.world_size, self.ds_source)
        gas = ds_cfg["gradient_accumulation_steps"]
        total = math.ceil(total / gas) * gas  # never end with accumulated, unapplied gradients
        engine = build_student_engine(module, ds_cfg, stage, total // gas)
        seed_everything(self.cfg.seed * 1000 + self.dist.rank + 1)  # per-rank dropout streams
        meta = {"domains": self.domains, "labels": self.labels, "role": role, "max_seq_len": self.cfg.data.max_seq_len}
        out_dir = self.run_dir.stage_dir(role)
        run = StageRun(
            role=role, stage=stage, engine=engine, sampler=sampler, collate=self.collate_fn(),
            dev_sets=self.split_sets("dev"), test_sets=self.split_sets("test"),
            domains=self.domains, pad_id=self.tokenizer.pad_token_id, out_dir=out_dir,
            total_steps=total, export=make_exporter(engine, self.tokenizer, self.dist, meta), teacher=teacher,
            evaluate=evaluate, guard=self.cfg.train,
        )
        best = Trainer(run, self.dist, self.metrics, self.tracker, self.preempt, self.cfg.tracking.progress_bar).fit()
        if not evaluate:
            return {"steps": total, "model_dir": str(out_dir / "model")}
        return {
            "dev": best.overall["dev"], "test": best.overall["test"], "best_step": best.overall["step"],
            "best_per_domain": best.per_domain, "final": best.final, "steps": total,
            "model_dir": str(out_dir / "model"),
        }

    def teacher_view(self) -> "StageContext":
        """The run as the teacher reads it: under teacher.tokenizer its own encoding of the same rows
        and its own tokenizer (data/teacher_encoding.py), for its evaluations and cached logits; else self."""
        own = self.data.teacher
        return self if own is None else replace(self, data=own.data, tokenizer=own.tokenizer)

    def evaluate_model(self, engine_or_model) -> dict[str, Any]:
        """Dev/test accuracy of a model outside a training stage (a loaded or exported teacher)."""
        dev, test = evaluate_dev_test(lambda batch: engine_or_model(**model_inputs(batch)).logits,
                                      self.split_sets("dev"), self.split_sets("test"), self.domains,
                                      self.tokenizer.pad_token_id, self.dist.rank, self.dist.world_size,
                                      EVAL_BATCH_SIZE, self.dist.device)
        return {"dev": dev.accuracy, "test": test.accuracy}

    def finish(self) -> None:
        self.tracker.summary({f"{role}/{split}/average": self.results[role][split]["average"]
                              for role in ("teacher", "student") if role in self.results
                              for split in ("dev", "test") if split in self.results[role]})
        self.tracker.finish()
