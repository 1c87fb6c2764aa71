"""Teacher parameter bytes and peak resident memory per rank: ZeRO-3 inference on 1, 2, 4 ranks.

Real multi-process runs: for each world size N this script starts itself under torchrun (gloo,
CPU). Every rank loads the exported teacher straight into ZeRO-3 partitions (the trainer's
`load_partitioned`), builds the inference engine from ds_configs/teacher_zero3.json, then from
teacher_zero3_offload.json, runs one forward, and reports what it holds: the partition's bytes
and the devices holding them (with parameter offload the partition lives in CPU memory; on a
CPU-only machine compute memory is CPU memory too, so offload cannot lower the number here, only
say where the bytes are), and the peak resident memory (VmHWM, reset before each config).
The unpartitioned row is the whole teacher loaded in one plain process.

Default teacher: BERT-large-shaped (24 layers / 1024 hidden / 16 heads, vocab 30522), random
weights, exported once to a temporary directory. Last line:
`worst_teacher_bytes_vs_ideal: X` = max over N and offload of held bytes / (full bytes / N).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hrkd_ds.config import ModelConfig
from hrkd_ds.config.deepspeed import read_ds_config
from hrkd_ds.engine.distributed import barrier, init_distributed, silence_known_warnings
from hrkd_ds.engine.teacher import build_teacher_engine, partition_record, teacher_ds_config
from hrkd_ds.models import build_model
from hrkd_ds.models.loading import load_exported, load_partitioned

CONFIGS = {"zero3": "ds_configs/teacher_zero3.json", "zero3+offload": "ds_configs/teacher_zero3_offload.json"}
K, C, T, ROWS = 5, 2, 128, 8  # a forward on ROWS rows per rank, so gathering during forward counts in the peak


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def reset_peak() -> None:
    """Linux: restart VmHWM from the current RSS."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def forward(model) -> None:
    ids = torch.randint(1, 1000, (ROWS, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), domain_ids=torch.zeros(ROWS, dtype=torch.long))


def worker(export: Path, out: Path) -> None:
    dist = init_distributed()
    silence_known_warnings()
    for name, path in CONFIGS.items():
        reset_peak()
        cfg = teacher_ds_config(read_ds_config(path), ROWS, dist.world_size)
        engine = build_teacher_engine(load_partitioned(export, cfg, "probs"), cfg)
        forward(engine)
        rec = {"rank": dist.rank, "world_size": dist.world_size, "config": name, **partition_record(engine),
               "peak_rss_bytes": status_bytes("VmHWM")}
        (out / f"{name}.n{dist.world_size}.rank{dist.rank}.json").write_text(json.dumps(rec))
        del engine
        barrier()
    torch.distributed.destroy_process_group()


def unpartitioned(export: Path) -> dict:
    """Whole teacher in this process (run in a fresh subprocess so its peak is its own)."""
    reset_peak()
    model = load_exported(export, "probs").eval()
    forward(model)
    return {**partition_record(model), "peak_rss_bytes": status_bytes("VmHWM")}


def export_teacher(a, where: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=a.hidden, num_layers=a.layers, num_heads=a.hidden // 64, intermediate_size=4 * a.hidden)
    build_model(cfg, K, C, a.vocab, 0, T).save_pretrained(where)


def launch(n: int, export: Path, out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
           "--master_port", str(29500 + n + os.getpid() % 1000), os.path.abspath(__file__), "--worker", str(export), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"torchrun with {n} ranks failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=1024, help="heads = hidden / 64, FFN = 4 x hidden")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--unpartitioned", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(Path(a.worker[0]), Path(a.worker[1]))
    if a.unpartitioned:
        return print(json.dumps(unpartitioned(Path(a.unpartitioned))))
    with tempfile.TemporaryDirectory(prefix="hrkd-bench-memory-") as tmp:
        export, out = Path(tmp) / "teacher", Path(tmp) / "records"
        out.mkdir()
        export_teacher(a, export)
        whole = subprocess.run([sys.executable, os.path.abspath(__file__), "--unpartitioned", str(export)],
                               capture_output=True, text=True, check=True)
        full = json.loads(whole.stdout.strip().splitlines()[-1])
        ranks = [int(n) for n in a.ranks.split(",")]
        for n in ranks:
            launch(n, export, out)
        records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    mib = lambda b: b / 2**20  # noqa: E731
    print(f"teacher {a.layers} layers x {a.hidden} hidden, vocab {a.vocab}: {mib(full['full_bytes']):.0f} MiB of parameters")
    print(f"{'config':<16}{'ranks':>6}{'rank':>6}{'param MiB held':>16}{'x ideal':>9}{'held on':>9}{'peak RSS MiB':>14}")
    print(f"{'unpartitioned':<16}{1:>6}{0:>6}{mib(full['held_bytes']):>16.0f}{1:>9.2f}{','.join(full['devices']):>9}"
          f"{mib(full['peak_rss_bytes']):>14.0f}")
    worst = 0.0
    for r in sorted(records, key=lambda r: (r["config"], r["world_size"], r["rank"])):
        ratio = r["held_bytes"] / (r["full_bytes"] / r["world_size"])
        worst = max(worst, ratio)
        print(f"{r['config']:<16}{r['world_size']:>6}{r['rank']:>6}{mib(r['held_bytes']):>16.0f}{ratio:>9.2f}"
              f"{','.join(r['devices']):>9}{mib(r['peak_rss_bytes']):>14.0f}")
    print(f"worst_teacher_bytes_vs_ideal: {worst:.3f}")


if __name__ == "__main__":
    main()
