#!/bin/bash
# One training rank inside an `srun` step: map Slurm's task ids to the torch/DeepSpeed launcher
# variables (DeepSpeed does not read SLURM_*), then exec the trainer so it receives signals itself.
# The mapping is hrkd_ds/engine/distributed.py's SLURM_TO_TORCH (a bare `srun python` gets it
# there); tests/slurm/test_rank_env.py runs this script and holds the two equal.
#   srun slurm/launch_rank.sh python hrkd_ds/train.py ...      (MASTER_ADDR/MASTER_PORT exported by the caller)
set -euo pipefail
: "${SLURM_PROCID:?launch_rank.sh must run inside an srun step}"
: "${MASTER_ADDR:?MASTER_ADDR not set}" "${MASTER_PORT:?MASTER_PORT not set}"
export RANK="$SLURM_PROCID"
export WORLD_SIZE="$SLURM_NTASKS"
export LOCAL_RANK="$SLURM_LOCALID"
export NODE_RANK="${SLURM_NODEID:-0}"
if [[ -n ${SLURM_NTASKS_PER_NODE:-} && ${SLURM_NTASKS_PER_NODE} =~ ^[0-9]+$ ]]; then
    export LOCAL_WORLD_SIZE="$SLURM_NTASKS_PER_NODE"
fi
# Threads per rank: what Slurm gave the task (default 1 CPU per task when unset).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
# CPU-only node: say so explicitly (silences DeepSpeed's accelerator probe warning).
if [[ -z ${DS_ACCELERATOR:-} ]] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    export DS_ACCELERATOR=cpu
fi
cd "${REPO_DIR:-$SLURM_SUBMIT_DIR}"
# USR1 would kill the trainer before it installs its preemption handler (default action:
# terminate). Ignore it until then (the disposition survives exec; the trainer's
# signal.signal() replaces it); distill.sh repeats the signal so none is lost.
trap '' USR1
echo "[launch_rank] $(date -Is) host=$(hostname) node=${SLURMD_NODENAME:-?} rank=$RANK/$WORLD_SIZE local_rank=$LOCAL_RANK master=$MASTER_ADDR:$MASTER_PORT restart=${SLURM_RESTART_COUNT:-0}"
exec "$@"
