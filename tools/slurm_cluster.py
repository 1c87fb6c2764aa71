#!/usr/bin/env python3
"""Start/stop a throwaway multi-node Slurm cluster on this one machine (tests and by hand).

Everything lives in one directory (default: a fresh temp dir): slurm.conf, a private munged
(own key and socket, so it never touches /run/munge), slurmctld state, one slurmd spool per
simulated node, pid files and logs.  Nodes are `node1..nodeN`, all `NodeAddr=127.0.0.1` with
their own slurmd port.  Ports are picked free at start (or from `--port-base`).

    python tools/slurm_cluster.py start [--dir D] [--nodes 2] [--cpus-per-node 1]
    eval "$(python tools/slurm_cluster.py env --dir D)"     # export SLURM_CONF=...
    sbatch --wait slurm/distill.sh
    python tools/slurm_cluster.py stop --dir D

`start` installs Debian's slurm-wlm and munge with apt-get when they are absent (root only),
is idempotent (an already running cluster in --dir is reused) and waits until every node is
idle.  `stop` cancels jobs, stops the daemons by their pid files and then any leftover process
of this cluster (slurmstepd and job tasks, found by a tag in their environment), by pid.

Library use (tests):  `with Cluster.start(path) as c: c.run(["sbatch", ...])`  or
`c = Cluster.start(path); try: ... finally: c.stop()`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slurm_host import (TAG_VAR, SlurmUnavailable, ensure_installed, free_ports, is_ours, missing_binaries, pid_alive,
                        port_free, read_pid, slurm_conf, tagged_pids, terminate)  # (tools/, this script's folder)

class Cluster:
    """A running (or startable) throwaway cluster rooted at `root`."""

    def __init__(self, root: str | Path, nodes: int = 2, cpus_per_node: int = 1,
                 port_base: int | None = None, name: str = "hrkdtest") -> None:
        self.root = Path(root).resolve()
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.port_base = port_base
        self.name = name
        self.first_job_id = int(os.environ.get("HRKD_SLURM_FIRST_JOB_ID", "0")) or random.randint(1000, 999_000)
        self.cred_expire = int(os.environ.get("HRKD_SLURM_CRED_EXPIRE", "10"))
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.log_dir = self.root / "log"
        self.node_names = [f"node{i}" for i in range(1, nodes + 1)]

    # ---------------------------------------------------------------- environment
    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF pointing at this cluster (use for sbatch/srun/scontrol)."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/sbin"
        return env

    def run(self, args: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        res = subprocess.run(args, env=kw.pop("env", self.env), capture_output=True, text=True, timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed rc={res.returncode}: {res.stdout}{res.stderr}")
        return res

    # ---------------------------------------------------------------- start
    @classmethod
    def start(cls, root: str | Path | None = None, nodes: int = 2, cpus_per_node: int = 1,
              port_base: int | None = None, install: bool = True, timeout: float = 60, log=print) -> "Cluster":
        if install:
            ensure_installed(log=log)
        elif missing_binaries():
            raise SlurmUnavailable(f"missing {', '.join(missing_binaries())}")
        if root is None:
            root = tempfile.mkdtemp(prefix="hrkd-slurm-")
        c = cls(root, nodes, cpus_per_node, port_base)
        state = c._load_state()
        if state and c._daemons_alive(state):
            log(f"slurm_cluster: reusing running cluster in {c.root}")
            c.nodes = state["nodes"]
            c.node_names = state["node_names"]
        else:
            if state:  # half-dead leftovers: clean them before starting again
                c.stop(log=lambda *_: None)
            try:
                c._start_fresh(log)
            except BaseException:
                c.stop(log=lambda *_: None)
                raise
        c.wait_idle(timeout=timeout)
        return c

    def _load_state(self) -> dict | None:
        try:
            return json.loads((self.root / "cluster.json").read_text())
        except (OSError, ValueError):
            return None

    def _pidfiles(self) -> dict[str, Path]:
        files = {"munged": self.munge_dir / "munged.pid", "slurmctld": self.root / "run" / "slurmctld.pid"}
        for n in self.node_names:
            files[f"slurmd-{n}"] = self.root / "run" / f"slurmd-{n}.pid"
        return files

    def _daemons_alive(self, state: dict) -> bool:
        self.node_names = state.get("node_names", self.node_names)
        pids = [read_pid(p) for p in self._pidfiles().values()]
        return all(p is not None and pid_alive(p) for p in pids)

    def _start_fresh(self, log) -> None:
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)  # munged runs as user munge and must reach its directory
        for sub in ("state", "run", "log", "spool"):
            (root / sub).mkdir(exist_ok=True)
        ctld_port, node_ports = self._ports()
        tag_env = dict(os.environ, **{TAG_VAR: str(root), "SLURM_CONF": str(self.conf)})
        self._start_munge(tag_env)
        self._write_conf(ctld_port, node_ports)
        self._start_daemons(tag_env)
        log(f"slurm_cluster: started {self.nodes} nodes in {root} (slurmctld port {ctld_port}, slurmd {node_ports})")

    def _ports(self) -> tuple[int, list[int]]:
        """slurmctld's port and one per node: from --port-base (refused when busy) or free ones."""
        if self.port_base:
            ports = list(range(self.port_base, self.port_base + 1 + self.nodes))
            busy = [p for p in ports if not port_free(p)]
            if busy:
                raise RuntimeError(f"ports {busy} are in use; pick another --port-base")
        else:
            ports = free_ports(1 + self.nodes)
        return ports[0], ports[1:]

    def _start_munge(self, tag_env: dict[str, str]) -> None:
        """munged with a private key, socket, pid and log, owned by the munge user."""
        self.munge_dir.mkdir(exist_ok=True)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        try:
            mu = pwd.getpwnam("munge")
            run_as = ["runuser", "-u", "munge", "--"] if os.geteuid() == 0 else []
            if os.geteuid() == 0:
                for p in (self.munge_dir, key):
                    os.chown(p, mu.pw_uid, mu.pw_gid)
        except KeyError:
            run_as = []
        self.munge_dir.chmod(0o755)  # munged: socket dir must be executable by all
        key.chmod(0o400)
        munged = shutil.which("munged", path=os.environ.get("PATH", "") + ":/usr/sbin")
        res = subprocess.run(run_as + [munged, f"--socket={self.munge_socket}", f"--key-file={key}",
                                       f"--pid-file={self.munge_dir / 'munged.pid'}",
                                       f"--log-file={self.munge_dir / 'munged.log'}",
                                       f"--seed-file={self.munge_dir / 'munged.seed'}"],
                             env=tag_env, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"munged failed: {res.stdout}{res.stderr}")

    def _write_conf(self, ctld_port: int, node_ports: list[int]) -> None:
        """slurm.conf for this throwaway cluster, and cluster.json saying where it listens."""
        self.conf.write_text(slurm_conf(self, ctld_port, node_ports))
        (self.root / "cluster.json").write_text(json.dumps({
            "root": str(self.root), "conf": str(self.conf), "nodes": self.nodes, "node_names": self.node_names,
            "ctld_port": ctld_port, "node_ports": node_ports}, indent=2) + "\n")

    def _start_daemons(self, tag_env: dict[str, str]) -> None:
        """slurmctld, then one slurmd per node; a failure shows the daemon's log tail."""
        sbin = os.environ.get("PATH", "") + ":/usr/sbin"
        res = subprocess.run([shutil.which("slurmctld", path=sbin), "-f", str(self.conf), "-i"],
                             env=tag_env, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"slurmctld failed: {res.stdout}{res.stderr}\n{self._tail('slurmctld.log')}")
        for name in self.node_names:
            res = subprocess.run([shutil.which("slurmd", path=sbin), "-f", str(self.conf), "-N", name],
                                 env=tag_env, capture_output=True, text=True, timeout=30)
            if res.returncode != 0:
                raise RuntimeError(f"slurmd {name} failed: {res.stdout}{res.stderr}\n{self._tail(f'slurmd-{name}.log')}")

    def _tail(self, logname: str, n: int = 20) -> str:
        try:
            return "\n".join((self.log_dir / logname).read_text().splitlines()[-n:])
        except OSError:
            return ""

    def wait_idle(self, timeout: float = 60) -> None:
        """Block until every node reports idle (or mixed/alloc: i.e. up and responding)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            res = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False, timeout=20)
            last = (res.stdout + res.stderr).strip()
            states = dict(line.split()[:2] for line in res.stdout.splitlines() if len(line.split()) >= 2)
            if res.returncode == 0 and set(states) >= set(self.node_names) and \
                    all(s.rstrip("*~#!%$@^-") in ("idle", "mix", "alloc") and not s.endswith("*") for s in states.values()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"nodes not idle after {timeout:.0f}s: {last}\n{self._tail('slurmctld.log')}")

    # ---------------------------------------------------------------- stop
    def stop(self, log=print, grace: float = 10) -> None:
        """Cancel jobs, stop daemons by pid file, then kill leftovers of this cluster by pid."""
        state = self._load_state()
        if state:
            self.node_names = state.get("node_names", self.node_names)
        pidfiles = self._pidfiles()
        ctld = read_pid(pidfiles["slurmctld"])
        if ctld and pid_alive(ctld) and self.conf.exists():
            try:
                self.run(["scancel", "--full", "--user", pwd.getpwuid(os.geteuid()).pw_name], check=False, timeout=15)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    q = self.run(["squeue", "-h", "-t", "R,CG", "-o", "%i"], check=False, timeout=15)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.5)
            except (subprocess.TimeoutExpired, OSError):
                pass
        stopped = []
        order = [k for k in pidfiles if k.startswith("slurmd-")] + ["slurmctld", "munged"]
        for key in order:
            pid = read_pid(pidfiles[key])
            if pid and pid_alive(pid) and is_ours(pid, self.root):
                terminate(pid, grace)
                stopped.append(f"{key}({pid})")
        leftovers = tagged_pids(self.root, self.conf)
        for pid in leftovers:
            terminate(pid, 3)
        if stopped or leftovers:
            log(f"slurm_cluster: stopped {' '.join(stopped) or '-'}; leftovers killed: {leftovers or '-'}")

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start (or reuse) a cluster; prints its directory")
    s.add_argument("--dir", default=os.environ.get("HRKD_SLURM_DIR"), help="cluster directory (default: new temp dir)")
    s.add_argument("--nodes", type=int, default=2)
    s.add_argument("--cpus-per-node", type=int, default=1)
    s.add_argument("--port-base", type=int, default=int(os.environ.get("HRKD_SLURM_PORT_BASE", "0")) or None,
                   help="slurmctld port; slurmd ports follow (default: free ports)")
    s.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing slurm-wlm")
    for name in ("stop", "env", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", default=os.environ.get("HRKD_SLURM_DIR"), required=os.environ.get("HRKD_SLURM_DIR") is None)
    args = ap.parse_args(argv)
    if args.cmd == "start":
        try:
            c = Cluster.start(args.dir, args.nodes, args.cpus_per_node, args.port_base,
                              install=not args.no_install, log=lambda m: print(m, file=sys.stderr))
        except SlurmUnavailable as err:
            print(f"slurm_cluster: slurm unavailable: {err}", file=sys.stderr)
            return 2
        print(c.root)
        print(f"# use it:  export SLURM_CONF={c.conf}", file=sys.stderr)
        return 0
    c = Cluster(args.dir)
    if args.cmd == "stop":
        c.stop(log=lambda m: print(m, file=sys.stderr))
    elif args.cmd == "env":
        print(f"export SLURM_CONF={c.conf}")
    elif args.cmd == "status":
        state = c._load_state()
        alive = bool(state) and c._daemons_alive(state)
        print(f"{c.root}: {'running' if alive else 'not running'}")
        if alive:
            print(c.run(["sinfo", "-N"], check=False).stdout, end="")
        return 0 if alive else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
