#!/usr/bin/env bash
# The GPU checks, one script for a lent GPU machine (about 15 minutes of device time in all):
#   bash tools/gpu_checks.sh [OUT_DIR]
# Writes each tool's output to OUT_DIR (default: $OUT, else runs/gpu_checks) and keeps going when
# one fails, so one short run brings back everything that worked. Record the numbers in
# docs/BENCHMARKS.md with the card's name (printed first).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu_checks}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
step() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" "$@" > "$OUT_DIR/$name.txt" 2>&1
  echo "   exit $? -> $OUT_DIR/$name.txt"; tail -3 "$OUT_DIR/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
step setup 240 bash tools/setup.sh
step cuda_tests 180 "$PY" -m pytest -q -p no:cacheprovider tests/distill tests/models/test_packing.py  # CUDA/Triton tests
step bench_loss 120 "$PY" tools/bench_loss.py --device cuda --repeats 30
step bench_step 240 "$PY" tools/bench_step.py --device cuda --repeats 5
# bf16 big teacher on one GPU: parameter offload (partition in host memory) instead of partitioning
step big_teacher_bf16 240 "$PY" tools/bench_big_teacher.py --device cuda --ranks 1 --bf16 --offload --layers 24 \
  --hidden 2048 --domains 4 --batch 8 --seq 128 --steps 5 --max-live 20000000 --headroom-gib 8
