"""Test-wide environment: no network tracking, CPU accelerator, quiet DeepSpeed."""

import os
from pathlib import Path

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _weight(item) -> int:
    if item.get_closest_marker("slow"):
        return 0
    if item.get_closest_marker("multiprocess") or item.get_closest_marker("slurm"):
        return 1
    return 2


def pytest_collection_modifyitems(config, items):
    """Long files first (stable otherwise): under `-n 3 --dist loadfile` each worker starts on a
    long file and the short ones fill in, instead of one long file running alone at the end."""
    weight: dict = {}
    for item in items:
        weight[item.path] = min(weight.get(item.path, 2), _weight(item))
    items.sort(key=lambda item: weight[item.path])
