"""HRKD on DeepSpeed: train the multi-domain meta-teacher, then distil the student.

    deepspeed hrkd_ds/train.py --deepspeed ds_configs/zero2.json [--config YAML] [key.sub=value ...]

Also started by torchrun, srun, or as a plain single process. Relaunching the same command
resumes. Reads top to bottom: setup (config, process group, data, run files) -> train (the
configured stages in order: general, teacher, distill, eval; see hrkd_ds/stages/) -> cleanup
(trackers, summary, process group).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by the deepspeed launcher
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers

from hrkd_ds import allocator
from hrkd_ds.config import Config, load_config
from hrkd_ds.config.deepspeed import read_ds_config
from hrkd_ds.distill.methods import method
from hrkd_ds.distill.term_registry import check_terms
from hrkd_ds.engine import diskspace, hang
from hrkd_ds.engine.distributed import DistInfo, close_process_group, init_distributed, silence_known_warnings
from hrkd_ds.engine.loop import Preempted
from hrkd_ds.engine.nonfinite import Diverged, likely_causes
from hrkd_ds.engine.where import NOW
from hrkd_ds.errors import RunStopped, UserError, exit_on_user_error
from hrkd_ds.models.checks import check_model_sources
from hrkd_ds.stages.checks import check_models_fit
from hrkd_ds.stages.context import StageContext, seed_everything
from hrkd_ds.stages.data_prep import resolve_teacher_dir
from hrkd_ds.stages.distill import run_distill
from hrkd_ds.stages.evaluation import run_eval
from hrkd_ds.stages.general import run_general
from hrkd_ds.stages.run_dir import check_output_dir
from hrkd_ds.stages.teacher import run_teacher

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(__file__).resolve().parent  # an installed package carries ds_configs/ here
DEFAULT_DS_CONFIG = "ds_configs/zero2.json"
STAGES = {"general": run_general, "teacher": run_teacher, "distill": run_distill, "eval": run_eval}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hrkd_ds/train.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="experiment YAML (default: the embedded default on the shipped sample)")
    p.add_argument("--deepspeed", "--deepspeed_config", dest="deepspeed", default=None,
                   help="DeepSpeed JSON for the trained model (default: ds_configs/zero2.json)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an input error")
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


def quiet_libraries() -> None:
    """Keep the console for our progress bar: no per-export shard bars, no DeepSpeed chatter, no
    deprecation warnings from inside torch/DeepSpeed (real warnings still show)."""
    silence_known_warnings()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def read_configs(args: argparse.Namespace) -> tuple[Config, dict, str]:
    """The YAML config and the student's DeepSpeed JSON, both validated before any process group, and
    the pretrained models' position embeddings against data.max_seq_len (nothing is written yet)."""
    cfg = load_config(resolve_path(args.config) if args.config else None, args.overrides)
    ds_path = resolve_path(args.deepspeed or DEFAULT_DS_CONFIG)
    ds_cfg = read_ds_config(ds_path)
    cfg.distill.teacher_deepspeed = resolve_path(cfg.distill.teacher_deepspeed)
    if "general" in cfg.stages or ("distill" in cfg.stages and method(cfg.distill.method).uses_teacher):
        read_ds_config(cfg.distill.teacher_deepspeed)
    check_terms(cfg.distill.terms)  # distill.terms names registered loss terms (distill/term_registry.py)
    check_output_dir(cfg.output_dir)
    teacher_dir = resolve_teacher_dir(cfg)  # setup resolves and checks them again; cheap
    check_model_sources(cfg, teacher_dir)
    check_models_fit(cfg, teacher_dir)  # data.max_seq_len vs position embeddings, before the data cache is written
    return cfg, ds_cfg, ds_path


def train(ctx: StageContext) -> None:
    try:
        for stage in ctx.cfg.stages:
            NOW.enter_stage(stage)
            STAGES[stage](ctx)
    except Diverged as stop:  # the line names the settings of this run that can cause it
        stop.message = f"{stop.message}; {likely_causes(ctx.cfg, ctx.ds_cfg, stop.role)}"
        ctx.tracker.finish()
        raise
    except BaseException:
        ctx.tracker.finish()
        raise


def as_stop(err: Exception, cfg: Config, dist: DistInfo) -> RunStopped | None:
    """The one-line stop for a fault met anywhere in a run: a collective that timed out, a disk
    that is full (a checkpoint's own is raised as DiskFull already, agreed by every rank)."""
    if isinstance(err, UserError):
        return None
    if hang.is_collective_timeout(err):
        return hang.timeout_stop(dist.rank, dist.world_size, cfg.train.collective_timeout_s)
    if diskspace.is_disk_full(err):
        where = diskspace.error_directory(err, NOW.write_dir or cfg.output_dir)
        return diskspace.DiskFull(diskspace.message(NOW.writing or "a write", where, NOW.write_bytes), together=False)
    return None


def report(stop: RunStopped, dist: DistInfo) -> None:
    """One line on stderr: from the main rank for a stop every rank made, else from this rank."""
    if dist.is_main or not stop.together:
        print(f"hrkd_ds: error: {stop.message}", file=sys.stderr, flush=True)


def cleanup(ctx: StageContext, dist: DistInfo) -> None:
    ctx.finish()
    if dist.is_main:
        print(json.dumps({role: {s: ctx.results[role].get(s, {}).get("average") for s in ("dev", "test")}
                          for role in ("teacher", "student") if role in ctx.results}), flush=True)
    close_process_group(together=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    with exit_on_user_error(debug=args.debug):
        cfg, ds_cfg, ds_path = read_configs(args)
    allocator.configure(cfg.train.malloc_mmap_threshold_kib, cfg.train.malloc_trim_every)  # before data and models
    dist = init_distributed(args.local_rank, cfg.train.collective_timeout_s)
    with exit_on_user_error(debug=args.debug):
        try:
            seed_everything(cfg.seed)
            ctx = StageContext.setup(cfg, ds_cfg, ds_path, dist)
            train(ctx)
        except Preempted:
            close_process_group(together=True)
            raise
        except RunStopped as stop:
            report(stop, dist)
            close_process_group(together=stop.together)
            raise
        except Exception as err:
            stop = as_stop(err, cfg, dist)
            close_process_group(together=False)
            if stop is None:
                raise
            report(stop, dist)
            raise stop from None
        except BaseException:
            close_process_group(together=False)
            raise
        cleanup(ctx, dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
