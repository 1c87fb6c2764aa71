"""Two real processes (gloo over TCP): every rank builds its own sampler, indices are all-gathered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SIZES = [13, 50, 31]
WORKER = r"""
import json, os, sys, torch, torch.distributed as dist
from hrkd_ds.data.sampler import EpisodicDomainSampler
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", init_method=os.environ["INIT"], rank=rank, world_size=world)
sampler = EpisodicDomainSampler(json.loads(os.environ["SIZES"]), 4, rank=rank, world_size=world, seed=9)
mine = torch.tensor([ep for ep in sampler], dtype=torch.long)   # (steps, K, B)
count = torch.tensor([mine.shape[0]])
counts = [torch.zeros_like(count) for _ in range(world)]
dist.all_gather(counts, count)
assert len({int(c) for c in counts}) == 1, counts                # equal step counts before a shaped gather
everyone = [torch.zeros_like(mine) for _ in range(world)]
dist.all_gather(everyone, mine)
if rank == 0:
    print("RESULT " + json.dumps(torch.stack(everyone).tolist()))
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_disjoint_equal_counts():
    world, init = 2, f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "INIT": init,
           "WORLD_SIZE": str(world), "SIZES": json.dumps(SIZES), "OMP_NUM_THREADS": "1"}  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    line = next(l for l in outs[0][0].splitlines() if l.startswith("RESULT "))
    gathered = np.array(json.loads(line[len("RESULT "):]))  # (W, steps, K, B)
    assert gathered.shape == (world, -(-max(SIZES) // (4 * world)), len(SIZES), 4)
    for k, n in enumerate(SIZES):
        a, b = (set(gathered[r, :, k].ravel().tolist()) for r in range(world))
        assert a.isdisjoint(b)
        assert a | b == set(range(n))
