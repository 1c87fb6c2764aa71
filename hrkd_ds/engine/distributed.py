"""Process-group start-up that works the same under deepspeed, torchrun, srun and a bare process.

On a machine without a GPU DeepSpeed's CPU accelerator is chosen explicitly, gloo is the backend,
and DeepSpeed's JIT-built shared-memory op (~30 s cold, only used by tensor-parallel inference,
segfaults with 2 ranks here) is skipped, so nobody has to export variables by hand.
"""

from __future__ import annotations

import importlib
import os
import socket
import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_from_slurm() -> None:
    """Map Slurm's task variables when a launcher did not set torch's (e.g. bare `srun python`)."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ or "SLURM_NTASKS" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))


def _default_env() -> None:
    """A single process without launcher variables would make DeepSpeed try MPI discovery."""
    _env_from_slurm()
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if os.environ["WORLD_SIZE"] != "1":
            raise RuntimeError("MASTER_PORT must be set when WORLD_SIZE > 1")
        os.environ["MASTER_PORT"] = str(_free_port())


def init_distributed(local_rank_arg: int | None = None) -> DistInfo:
    """Initialise torch.distributed through DeepSpeed for CPU or GPU, whatever started us."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    _default_env()
    if local_rank_arg is not None and local_rank_arg >= 0:
        os.environ["LOCAL_RANK"] = str(local_rank_arg)
    import deepspeed  # noqa: F401  lazy: DS_ACCELERATOR and the launcher variables must be set first

    ds_comm_torch = importlib.import_module("deepspeed.comm.torch")  # attribute path resolves to torch itself
    ds_comm_torch.build_shm_op = lambda: None
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return DistInfo(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        device=device,
    )


def silence_known_warnings() -> None:
    """torch deprecates `all_gather_into_tensor` and `reduce_scatter_tensor`, which DeepSpeed's ZeRO calls on every rank;
    nothing for a user to act on. Only that message, from the module torch attributes it to."""
    for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):  # ZeRO-2/3 call both on every rank
        warnings.filterwarnings("ignore", message=rf"`torch\.distributed\.{name}` is deprecated",
                                category=FutureWarning, module=r"torch\.distributed\.c10d_logger")


def barrier() -> None:
    """A barrier that is a no-op outside a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op for a single process)."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any: keeps ranks in lockstep on stop decisions."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)
