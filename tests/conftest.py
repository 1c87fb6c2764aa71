"""Test-wide environment: no network tracking, CPU accelerator, quiet DeepSpeed."""

import os
from pathlib import Path

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
