"""Process-group start-up that works the same under deepspeed, torchrun, srun and a bare process.

On a machine without a GPU DeepSpeed's CPU accelerator is chosen explicitly, gloo is the backend,
and DeepSpeed's JIT-built shared-memory op (~30 s cold, only used by tensor-parallel inference,
segfaults with 2 ranks here) is skipped, so nobody has to export variables by hand.

Every collective, DeepSpeed's own included, gives up after `train.collective_timeout_s` instead of
torch's 30 minutes: a rank that stopped answering ends the job in minutes (engine/hang.py says so).
`SLURM_TO_TORCH` is the one mapping of Slurm's task variables; slurm/launch_rank.sh exports the
same (tests/slurm/test_rank_env.py runs the script and compares).
"""

from __future__ import annotations

import importlib
import os
import socket
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import torch

# torch/DeepSpeed launcher variable <- the Slurm task variable it is taken from
SLURM_TO_TORCH = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID",
                  "NODE_RANK": "SLURM_NODEID", "LOCAL_WORLD_SIZE": "SLURM_NTASKS_PER_NODE"}
SLURM_DEFAULTS = {"LOCAL_RANK": "0", "NODE_RANK": "0"}  # what a bare `srun python` may leave unset


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


def torch_env_from_slurm(env: Mapping[str, str]) -> dict[str, str]:
    """The launcher variables a Slurm task's environment gives (empty outside a Slurm task).
    SLURM_NTASKS_PER_NODE is used only when it is one number (it reads "2(x3)" on uneven jobs)."""
    if "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        return {}
    out = {}
    for var, slurm in SLURM_TO_TORCH.items():
        value = env.get(slurm, SLURM_DEFAULTS.get(var))
        if value is not None and value.isdigit():
            out[var] = value
    return out


def _env_from_slurm() -> None:
    """Map Slurm's task variables when a launcher did not set torch's (e.g. bare `srun python`)."""
    if "RANK" in os.environ:
        return
    for var, value in torch_env_from_slurm(os.environ).items():
        if var in ("RANK", "WORLD_SIZE"):
            os.environ[var] = value
        else:
            os.environ.setdefault(var, value)


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


def _with_timeout_everywhere(timeout: timedelta) -> None:
    """torch gives every group made by `new_group` without a timeout its 30-minute default, not the
    world group's; ZeRO reduces over DeepSpeed's clone of the world group, made that way on first
    use and cached in `_WORLD_GROUP`. Making that clone here, with the timeout, covers ZeRO too."""
    from deepspeed.utils import groups

    if groups._WORLD_GROUP is None:
        groups._WORLD_GROUP = torch.distributed.new_group(ranks=range(torch.distributed.get_world_size()),
                                                          timeout=timeout)


def init_distributed(local_rank_arg: int | None = None, timeout_s: float = 300.0) -> DistInfo:
    """Initialise torch.distributed through DeepSpeed for CPU or GPU, whatever started us; every
    collective gives up after `timeout_s` seconds (train.collective_timeout_s)."""
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
        timeout = timedelta(seconds=timeout_s)
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, timeout=timeout)
        _with_timeout_everywhere(timeout)
    return DistInfo(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        device=device,
    )


def close_process_group(together: bool) -> None:
    """Close the process group before leaving on an error path. Exiting with it open lets the
    interpreter's teardown meet gloo's worker threads, which can abort the rank (SIGABRT), and
    the launcher then reports that instead of our exit code. `together`: every rank decided this
    stop in step (Preempted, a RunStopped made `together`), so they meet once more and leave at the
    same time."""
    if not torch.distributed.is_initialized():
        return
    if together:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        return
    try:
        torch.distributed.destroy_process_group()
    except Exception:  # noqa: BLE001  the error that brought us here is the one to report
        pass


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
