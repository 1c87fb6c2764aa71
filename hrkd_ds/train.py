"""HRKD on DeepSpeed: train the multi-domain meta-teacher, then distil the student.

    deepspeed hrkd_ds/train.py --deepspeed ds_configs/zero2.json [--config YAML] [key.sub=value ...]

Reads top to bottom: config -> data -> teacher -> student engine -> loop. Also started by
torchrun, srun, or as a plain single process. Relaunching the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file by the deepspeed launcher
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from hrkd_ds.config import Config, load_config, save_config, to_dict
from hrkd_ds.errors import UserError, exit_on_user_error
from hrkd_ds.engine.distributed import any_rank, barrier
from hrkd_ds.io import atomic_write_json, atomic_write_text, recover_dir, replace_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(__file__).resolve().parent  # an installed package carries ds_configs/ here
DEFAULT_DS_CONFIG = "ds_configs/zero2.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hrkd_ds/train.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="experiment YAML (default: the embedded default on the shipped sample)")
    p.add_argument("--deepspeed", "--deepspeed_config", dest="deepspeed", default=None,
                   help="DeepSpeed JSON for the trained model (default: ds_configs/zero2.json)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return p.parse_args(argv)


def resolve_path(path: str) -> str:
    """Relative paths are taken from the working directory, else from the repository root, else
    from the installed package (ds_configs/)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for root in (REPO_ROOT, PACKAGE_DIR):
        if (root / path).exists():
            return str(root / path)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- data ---------------------------------------------------------------------------------
def resolve_teacher_dir(cfg: Config) -> Path | None:
    """`teacher_from` may name a finished run or a Hugging Face model directory."""
    if not cfg.teacher_from:
        return None
    p = Path(cfg.teacher_from)
    if (p / "teacher" / "model").is_dir():
        if not (p / "teacher" / "DONE").is_file():
            raise UserError(f"config field 'teacher_from': the teacher stage of {cfg.teacher_from} has not finished")
        p = p / "teacher" / "model"
    if not (p / "config.json").is_file():
        raise UserError(f"config field 'teacher_from': no model (config.json) in {cfg.teacher_from}")
    return p


def load_data(cfg: Config, dist, teacher_dir: Path | None, cache_dir: str):
    """Splits, tokenizer and tokenized datasets; rank 0 builds caches while the others wait."""
    from hrkd_ds.data.multidomain import tokenize_splits
    from hrkd_ds.data.splits import load_splits
    from hrkd_ds.data.tokenizer import build_tokenizer

    tok_cfg = cfg.tokenizer
    if teacher_dir is not None and (teacher_dir / "tokenizer_config.json").is_file():
        tok_cfg = type(tok_cfg)(kind="pretrained", path=str(teacher_dir))  # a teacher brings its tokenizer
    raw = load_splits(cfg.data)
    for turn in (0, 1):
        error = None
        if dist.is_main == (turn == 0):
            try:
                tokenizer = build_tokenizer(tok_cfg, raw, cache_dir)
                data = tokenize_splits(raw, tokenizer, cfg.data.max_seq_len, cache_dir)
            except UserError as err:
                error = err
        if any_rank(error is not None, dist.device):  # every rank stops, none waits in a barrier
            raise error or UserError("tokenizer/data preparation failed on rank 0 (see its message)")
    return raw, tokenizer, data


# Fields that may change when a run is relaunched into the same output_dir (schedule length,
# logging, which stages run); anything else would silently mix two experiments in one run.
RESUME_FREE = ("stages", "output_dir", "tracking.", "data.cache_dir", "distill.teacher_deepspeed",
               "_train.epochs", "_train.max_steps", "_train.eval_every", "_train.save_every", "_train.log_every")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resume_config(cfg: Config, ds_cfg: dict[str, Any], saved: Path) -> None:
    """Relaunching into an existing run must not change what that run is."""
    import yaml

    if not saved.is_file():
        return
    old = _flatten(yaml.safe_load(saved.read_text()) or {})
    new = _flatten(to_dict(cfg))
    saved_ds = saved.with_name("deepspeed_config.json")
    if saved_ds.is_file():  # what a DeepSpeed checkpoint cannot be loaded across
        for name, cfg_ds in (("old", json.loads(saved_ds.read_text())), ("new", ds_cfg)):
            flat = {"ds.zero_stage": cfg_ds.get("zero_optimization", {}).get("stage", 0),
                    "ds.bf16": bool(cfg_ds.get("bf16", {}).get("enabled", False)),
                    "ds.fp16": bool(cfg_ds.get("fp16", {}).get("enabled", False)),
                    "ds.gradient_accumulation_steps": cfg_ds.get("gradient_accumulation_steps", 1)}
            (old if name == "old" else new).update(flat)
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUME_FREE) or key.endswith(RESUME_FREE) or old.get(key) == new.get(key):
            continue
        raise UserError(
            f"output_dir {cfg.output_dir} holds a run with {key}={old.get(key)!r}, not {new.get(key)!r}: "
            "use a new output_dir, or the same settings to resume"
        )


# ---- models -------------------------------------------------------------------------------
def load_exported(path: Path, attention: str):
    """A model exported by a previous stage (or any HF dir with the hrkd label layout)."""
    from transformers import AutoModelForSequenceClassification

    from hrkd_ds.models.attention import register_attention
    from hrkd_ds.models.encoder import MultiDomainClassifier

    hf = AutoModelForSequenceClassification.from_pretrained(str(path), attn_implementation=register_attention())
    return MultiDomainClassifier(hf, attention=attention)


def check_teacher_matches(teacher, domains: list[str], labels: list[str], where: Path) -> None:
    t_domains = list(getattr(teacher.config, "hrkd_domains", []) or [])
    t_labels = list(getattr(teacher.config, "hrkd_labels", []) or [])
    if t_domains != domains or t_labels != labels:
        raise UserError(
            f"teacher at {where} was trained on domains {t_domains} / labels {t_labels}, "
            f"but the data has {domains} / {labels}"
        )


def make_exporter(engine, tokenizer, dist, extra: dict[str, Any]):
    """Collective export of engine.module.model as a Hugging Face directory (atomic swap)."""
    import deepspeed

    def export(dest: Path) -> None:
        model = engine.module.model
        zero3 = engine.zero_optimization_partition_weights()
        gather = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None) if zero3 else nullcontext()
        with gather:
            if dist.is_main:
                tmp = dest.with_name(f".{dest.name}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                atomic_write_json(tmp / "hrkd.json", extra)
                replace_dir(tmp, dest)
        barrier()

    return export


# ---- stages -------------------------------------------------------------------------------
class Run:
    """Shared state of one invocation: config, process group, data, outputs, trackers."""

    def __init__(self, cfg: Config, ds_cfg: dict[str, Any], ds_source: str, dist) -> None:
        from hrkd_ds.engine.preemption import PreemptionFlag
        from hrkd_ds.tracking.metrics import MetricsLog
        from hrkd_ds.tracking.wandb_run import WandbRun, resolve_mode

        self.cfg, self.ds_cfg, self.ds_source, self.dist = cfg, ds_cfg, ds_source, dist
        self.out = Path(cfg.output_dir)
        self.preempt = PreemptionFlag().install()
        check_resume_config(cfg, ds_cfg, self.out / "config.yaml")
        self.teacher_dir = resolve_teacher_dir(cfg)
        cache_dir = cfg.data.cache_dir or str(self.out.resolve().parent / ".hrkd_cache")
        self.raw, self.tokenizer, self.data = load_data(cfg, dist, self.teacher_dir, cache_dir)  # bad data: nothing written yet
        self.domains, self.labels = list(self.raw.domains), list(self.raw.labels)
        self.check_stages()  # a setting that would fail a later stage fails now, before anything is written
        barrier()  # every rank has compared configs before rank 0 overwrites
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            atomic_write_json(self.out / "deepspeed_config.json", ds_cfg)
            atomic_write_json(self.out / "labels.json", {"domains": self.domains, "labels": self.labels})
        self.metrics = MetricsLog(self.out / "metrics.jsonl", enabled=dist.is_main)
        results_file = self.out / "results.json"
        self.results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.is_file() else {}
        wandb_id_file = self.out / "wandb_id"
        resume_id = wandb_id_file.read_text().strip() if wandb_id_file.is_file() else None
        self.tracker = WandbRun(dist.is_main, cfg.tracking.wandb_project, resolve_mode(cfg.tracking.wandb_mode),
                                str(self.out), self.out.name, to_dict(cfg), resume_id)
        if self.tracker.id and dist.is_main:
            atomic_write_text(wandb_id_file, self.tracker.id)

    @property
    def K(self) -> int:
        return len(self.domains)

    def save_results(self) -> None:
        if self.dist.is_main:
            atomic_write_json(self.out / "results.json", self.results)

    def stage_dir(self, role: str) -> Path:
        return self.out / role

    def done(self, role: str) -> bool:
        return (self.stage_dir(role) / "DONE").is_file() and role in self.results

    def mark_done(self, role: str) -> None:
        if self.dist.is_main:
            atomic_write_text(self.stage_dir(role) / "DONE", "ok\n")

    def micro_batch(self, stage) -> int:
        return stage.batch_per_domain * self.K

    def check_stages(self) -> None:
        """Reject a DeepSpeed JSON or a sampler setting that contradicts any stage about to train,
        before the first one trains."""
        from hrkd_ds.engine.ds_config import with_batch_sizes

        stages = [self.cfg.teacher_train] if "teacher" in self.cfg.stages and self.teacher_dir is None else []
        stages += [self.cfg.distill_train] if "distill" in self.cfg.stages else []
        for stage in stages:
            with_batch_sizes(self.ds_cfg, self.micro_batch(stage), self.dist.world_size, self.ds_source)
            self.sampler(stage)
        if "distill" in self.cfg.stages and self.cfg.distill.method != "none":
            self.check_distill_shapes()

    def _teacher_shape(self) -> tuple[int, int, int, int]:
        """(layers, hidden, heads, ffn) of the teacher the distill stage will use, without loading it."""
        from transformers import AutoConfig

        src = self.teacher_dir or (Path(self.cfg.teacher.pretrained) if self.cfg.teacher.pretrained else None)
        if src is None and (self.stage_dir("teacher") / "model" / "config.json").is_file() and "teacher" not in self.cfg.stages:
            src = self.stage_dir("teacher") / "model"
        if src is not None:
            c = AutoConfig.from_pretrained(str(src))
            return c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size
        t = self.cfg.teacher
        return t.num_layers, t.hidden_size, t.num_heads, t.intermediate_size

    def check_distill_shapes(self) -> None:
        """Layer map, teacher layers and widths are checked before the teacher trains, not after."""
        from hrkd_ds.distill.losses import resolve_layer_map
        from hrkd_ds.models.student_init import check_teacher_layers

        cfg = self.cfg
        t_layers, t_hidden, t_heads, t_ffn = self._teacher_shape()
        s = cfg.student
        if s.init == "teacher_layers":
            check_teacher_layers(s.teacher_layers, t_layers)
            for ours, theirs in (("hidden_size", t_hidden), ("num_heads", t_heads), ("intermediate_size", t_ffn)):
                if getattr(s, ours) != theirs:
                    raise UserError(f"config field 'student.{ours}': {getattr(s, ours)} must equal the teacher's {theirs} "
                                    "when student.init is 'teacher_layers'")
            s_layers = len(s.teacher_layers)
        elif s.pretrained:
            from transformers import AutoConfig

            s_layers = AutoConfig.from_pretrained(s.pretrained).num_hidden_layers
        else:
            s_layers = s.num_layers
        resolve_layer_map(s_layers, t_layers, cfg.distill.layer_map or None)
        if not cfg.distill.fused and self.ds_cfg.get("zero_optimization", {}).get("stage", 0) == 3:
            raise UserError("config field 'distill.fused': the per-domain loop reference (false) does not run under a "
                            "ZeRO-3 student; use the fused loss or ZeRO 0-2")

    def sampler(self, stage):
        from hrkd_ds.data.sampler import EpisodicDomainSampler

        epoch_domain = None
        if stage.epoch_policy == "domain":
            if stage.epoch_domain not in self.domains:
                key = "teacher_train" if stage is self.cfg.teacher_train else "distill_train"
                raise UserError(f"config field '{key}.epoch_domain': {stage.epoch_domain!r} is not one of {self.domains}")
            epoch_domain = self.domains.index(stage.epoch_domain)
        sizes = [len(self.data.splits["train"][d]) for d in self.domains]
        return EpisodicDomainSampler(
            sizes, stage.batch_per_domain, rank=self.dist.rank, world_size=self.dist.world_size,
            seed=self.cfg.seed, epoch_policy=stage.epoch_policy, epoch_domain=epoch_domain,
            steps_per_epoch=stage.steps_per_epoch or None,
        )

    def total_steps(self, stage, sampler) -> int:
        steps = math.ceil(stage.epochs * sampler.steps_per_epoch)
        return min(steps, stage.max_steps) if stage.max_steps else steps

    def collate_fn(self):
        from hrkd_ds.data.collate import collate_episode

        train = [self.data.splits["train"][d] for d in self.domains]
        pad_id, device = self.tokenizer.pad_token_id, self.dist.device

        def collate(episode):
            return {k: v.to(device) for k, v in collate_episode(train, episode, pad_id).items()}

        return collate

    def train_stage(self, role: str, module: torch.nn.Module, stage, teacher=None) -> dict[str, Any]:
        """Engine + sampler + loop for one stage; returns the best/final accuracies."""
        from hrkd_ds.engine.ds_config import with_batch_sizes
        from hrkd_ds.engine.loop import StageRun, Trainer
        from hrkd_ds.engine.student import build_student_engine

        sampler = self.sampler(stage)
        total = self.total_steps(stage, sampler)
        ds_cfg = with_batch_sizes(self.ds_cfg, self.micro_batch(stage), self.dist.world_size, self.ds_source)
        gas = ds_cfg["gradient_accumulation_steps"]
        total = math.ceil(total / gas) * gas  # never end with accumulated, unapplied gradients
        engine = build_student_engine(module, ds_cfg, stage, total // gas)
        seed_everything(self.cfg.seed * 1000 + self.dist.rank + 1)  # per-rank dropout streams
        meta = {"domains": self.domains, "labels": self.labels, "role": role}
        run = StageRun(
            role=role, stage=stage, engine=engine, sampler=sampler, collate=self.collate_fn(),
            dev_sets=self.split_sets("dev"), test_sets=self.split_sets("test"),
            domains=self.domains, pad_id=self.tokenizer.pad_token_id, out_dir=self.stage_dir(role),
            total_steps=total, export=make_exporter(engine, self.tokenizer, self.dist, meta), teacher=teacher,
        )
        best = Trainer(run, self.dist, self.metrics, self.tracker, self.preempt, self.cfg.tracking.progress_bar).fit()
        return {
            "dev": best["overall"]["dev"], "test": best["overall"]["test"], "best_step": best["overall"]["step"],
            "best_per_domain": best["per_domain"], "final": best["final"], "steps": total,
            "model_dir": str(self.stage_dir(role) / "model"),
        }

    # -- stage 1
    def run_teacher(self) -> None:
        from hrkd_ds.engine.modules import SupervisedModule
        from hrkd_ds.models.encoder import build_model

        if self.teacher_dir is not None or self.done("teacher"):
            return
        seed_everything(self.cfg.seed)
        model = build_model(self.cfg.teacher, self.K, len(self.labels), len(self.tokenizer), self.tokenizer.pad_token_id,
                            self.cfg.data.max_seq_len, attention=self.cfg.distill.attention,
                            domains=self.domains, labels=self.labels)
        self.results["teacher"] = self.train_stage("teacher", SupervisedModule(model, self.K), self.cfg.teacher_train)
        self.save_results()
        self.mark_done("teacher")

    # -- stage 2
    def teacher_source(self) -> Path:
        src = self.teacher_dir or self.stage_dir("teacher") / "model"
        recover_dir(src)  # an export interrupted between its two renames
        if not (src / "config.json").is_file():
            raise UserError(f"the distill stage needs a teacher: none at {src} (run the teacher stage or set teacher_from)")
        return src

    def run_distill(self) -> None:
        from hrkd_ds.distill.reference_loss import ReferenceDistillLoss
        from hrkd_ds.distill.relational_loss import RelationalDistillLoss
        from hrkd_ds.engine.ds_config import read_ds_config
        from hrkd_ds.engine.modules import DistillModule, SupervisedModule
        from hrkd_ds.engine.teacher import build_teacher_engine, teacher_ds_config
        from hrkd_ds.models.encoder import build_model
        from hrkd_ds.models.partitioned import load_partitioned

        if self.done("student"):
            return
        cfg, stage = self.cfg, self.cfg.distill_train
        method = cfg.distill.method
        teacher = layer_source = None
        if method != "none" or cfg.student.init == "teacher_layers":
            src = self.teacher_source()
        if cfg.student.init == "teacher_layers":  # a full copy in host memory, only while the student is built
            layer_source = load_exported(src, cfg.distill.attention)
            check_teacher_matches(layer_source, self.domains, self.labels, src)
        if method != "none":
            t_cfg = teacher_ds_config(read_ds_config(cfg.distill.teacher_deepspeed), self.micro_batch(stage), self.dist.world_size)
            if t_cfg.get("zero_optimization", {}).get("stage", 0) == 3:
                teacher = load_partitioned(src, t_cfg, cfg.distill.attention)  # never whole on any rank
            else:
                teacher = load_exported(src, cfg.distill.attention)
            check_teacher_matches(teacher, self.domains, self.labels, src)
        seed_everything(cfg.seed + 1)
        student = build_model(cfg.student, self.K, len(self.labels), len(self.tokenizer), self.tokenizer.pad_token_id,
                              cfg.data.max_seq_len, attention=cfg.distill.attention, teacher=layer_source,
                              domains=self.domains, labels=self.labels)
        del layer_source
        teacher_engine = None
        if method == "none":
            module = SupervisedModule(student, self.K)
        else:
            graph_cfg = cfg.graph if method == "hrkd" else type(cfg.graph)(**{**to_dict(cfg)["graph"], "enabled": False})
            loss_cls = RelationalDistillLoss if cfg.distill.fused else ReferenceDistillLoss
            loss = loss_cls.from_config(student, teacher, self.K, graph_cfg, cfg.distill)
            module = DistillModule(student, loss, self.K)
            teacher_engine = build_teacher_engine(teacher, t_cfg)
            if "teacher" not in self.results:  # teacher came from elsewhere: report it too
                self.results["teacher"] = self.evaluate_model(teacher_engine)
        self.results["student"] = self.train_stage("student", module, stage, teacher=teacher_engine)
        self.results["student"]["method"] = method
        self.save_results()
        self.plot_weights()
        self.mark_done("student")

    def split_sets(self, split: str) -> dict[str, Any]:
        return {d: self.data.splits[split][d] for d in self.domains}

    def evaluate_model(self, engine_or_model) -> dict[str, Any]:
        """Dev/test accuracy of a model outside a training stage (a loaded or exported teacher)."""
        from hrkd_ds.engine.evaluate import EVAL_BATCH_SIZE, evaluate_dev_test
        from hrkd_ds.engine.modules import model_inputs

        dev, test = evaluate_dev_test(lambda batch: engine_or_model(**model_inputs(batch)).logits,
                                      self.split_sets("dev"), self.split_sets("test"), self.domains,
                                      self.tokenizer.pad_token_id, self.dist.rank, self.dist.world_size,
                                      EVAL_BATCH_SIZE, self.dist.device)
        return {"dev": dev, "test": test}

    # -- stage 3
    def run_eval(self) -> None:
        """Re-evaluate the exported models (teacher and student) on dev and test."""
        for role in ("teacher", "student"):
            src = self.teacher_dir if role == "teacher" and self.teacher_dir else self.stage_dir(role) / "model"
            if not (src / "config.json").is_file():
                continue
            model = load_exported(src, self.cfg.distill.attention).to(self.dist.device).eval()
            with torch.no_grad():
                self.results.setdefault(role, {})["eval"] = self.evaluate_model(model)
            self.results[role].setdefault("dev", self.results[role]["eval"]["dev"])
            self.results[role].setdefault("test", self.results[role]["eval"]["test"])
        self.save_results()

    def plot_weights(self) -> None:
        from hrkd_ds.tracking.plots import plot_domain_weights

        if not (self.dist.is_main and self.cfg.tracking.plot):
            return
        png = self.out / "domain_weights.png"
        if plot_domain_weights(self.metrics.rows("student"), self.domains, png) and self.tracker.run is not None:
            import wandb

            self.tracker.run.log({"domain_weights": wandb.Image(str(png))})

    def finish(self) -> None:
        self.tracker.summary({f"{role}/{split}/average": self.results[role][split]["average"]
                              for role in ("teacher", "student") if role in self.results
                              for split in ("dev", "test") if split in self.results[role]})
        self.tracker.finish()


def quiet_libraries() -> None:
    """Keep the console for our progress bar: no per-export shard bars, no DeepSpeed chatter."""
    import logging

    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    from hrkd_ds.engine.distributed import init_distributed

    args = parse_args(argv)
    quiet_libraries()
    with exit_on_user_error():
        cfg = load_config(resolve_path(args.config) if args.config else None, args.overrides)
        from hrkd_ds.engine.ds_config import read_ds_config

        ds_path = resolve_path(args.deepspeed or DEFAULT_DS_CONFIG)
        ds_cfg = read_ds_config(ds_path)
        cfg.distill.teacher_deepspeed = resolve_path(cfg.distill.teacher_deepspeed)
        if "distill" in cfg.stages and cfg.distill.method != "none":
            read_ds_config(cfg.distill.teacher_deepspeed)
    dist = init_distributed(args.local_rank)
    with exit_on_user_error():
        seed_everything(cfg.seed)
        run = Run(cfg, ds_cfg, ds_path, dist)
        try:
            for stage in cfg.stages:
                {"teacher": run.run_teacher, "distill": run.run_distill, "eval": run.run_eval}[stage]()
        except BaseException:
            run.tracker.finish()
            raise
        run.finish()
    if dist.is_main:
        print(json.dumps({role: {s: run.results[role].get(s, {}).get("average") for s in ("dev", "test")}
                          for role in ("teacher", "student") if role in run.results}), flush=True)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
