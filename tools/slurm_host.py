"""What tools/slurm_cluster.py's throwaway cluster needs from this machine: the Slurm and munge
binaries (apt-get installed when missing), free ports, its slurm.conf, and its processes found,
checked and stopped by pid (never by name)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo", "scancel", "munged")
TAG_VAR = "HRKD_SLURM_CLUSTER"  # set in every daemon's environment: finds their descendants


class SlurmUnavailable(RuntimeError):
    """Slurm/munge are not installed and could not be installed (no root, no registry...)."""


def missing_binaries() -> list[str]:
    extra = os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    path = os.environ.get("PATH", "") + extra
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def ensure_installed(log=print, timeout: float = 600) -> None:
    """apt-get install slurm-wlm + munge when any binary is missing; SlurmUnavailable on failure."""
    missing = missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"missing {', '.join(missing)} and not root: cannot apt-get install slurm-wlm")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"missing {', '.join(missing)} and no apt-get on this machine")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"slurm_cluster: installing slurm-wlm munge (missing: {', '.join(missing)})")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"]):
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{' '.join(cmd)} timed out after {timeout:.0f}s") from None
        if res.returncode != 0:
            tail = (res.stdout + res.stderr).strip().splitlines()[-5:]
            raise SlurmUnavailable(f"{' '.join(cmd)} failed (rc={res.returncode}): " + " | ".join(tail))
    missing = missing_binaries()
    if missing:
        raise SlurmUnavailable(f"still missing after apt-get install: {', '.join(missing)}")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_ours(pid: int, root: Path) -> bool:
    """Guard against a recycled pid: the process must carry the cluster's tag or mention its dir."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f"{TAG_VAR}={root}".encode() in environ or str(root).encode() in cmdline


def tagged_pids(root: Path, conf: Path) -> list[int]:
    """Processes left from the cluster at `root`: daemons' descendants (tag) and job tasks (SLURM_CONF)."""
    me = {os.getpid(), os.getppid()}
    tag = f"{TAG_VAR}={root}".encode()
    conf_var = f"SLURM_CONF={conf}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in me:
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if tag in env or (conf_var in env and any(e.startswith(b"SLURM_JOB_ID=") for e in env)):
            found.append(int(d.name))
    return found


def terminate(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaps it if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        try:  # reap if it happens to be our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def slurm_conf(c, ctld_port: int, node_ports: list[int]) -> str:
    """slurm.conf's text for the throwaway cluster `c` (a slurm_cluster.Cluster): its name, munge
    socket, directories, nodes and ports."""
    lines = [
        f"ClusterName={c.name}",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        # cred_expire: a requeued job is held this long (default 120 s); short for a test cluster
        f"AuthInfo=socket={c.munge_socket},cred_expire={c.cred_expire}",
        "CredType=cred/munge",
        f"StateSaveLocation={c.root / 'state'}",
        f"SlurmdSpoolDir={c.root / 'spool'}/%n",
        f"SlurmctldPidFile={c.root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={c.root / 'run'}/slurmd-%n.pid",
        f"SlurmctldLogFile={c.log_dir / 'slurmctld.log'}",
        f"SlurmdLogFile={c.log_dir}/slurmd-%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=bf_interval=1,sched_interval=2",  # requeued jobs start soon after their hold
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "JobRequeue=1",
        # random first job id: slurm/distill.sh derives MASTER_PORT from the job id, so two
        # throwaway clusters running side by side do not hand out the same ports
        f"FirstJobId={c.first_job_id}",
        "MinJobAge=600",
        "KillWait=15",
        "SlurmdTimeout=60",
        "InactiveLimit=0",
        "PlugStackConfig=/dev/null",
    ]
    for name, port in zip(c.node_names, node_ports):
        lines.append(f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
                     f"CPUs={c.cpus_per_node} RealMemory=1000 State=UNKNOWN")
    lines.append(f"PartitionName=debug Nodes={','.join(c.node_names)} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"
