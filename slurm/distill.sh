#!/bin/bash
# hrkd-ds on Slurm: one rank per GPU (per CPU rank on CPU-only nodes), started by srun; checkpoints
# and requeues itself on the pre-time-limit warning signal; resumes from the checkpoint when requeued.
#
#   sbatch slurm/distill.sh                                   # teacher + distill, embedded default config
#   sbatch slurm/distill.sh teacher                           # one stage: general | teacher | distill | eval | all
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 slurm/distill.sh
#   CONFIG=configs/x.yaml DS_CONFIG=ds_configs/zero2.json sbatch slurm/distill.sh distill_train.lr=3e-5
# Extra arguments of the form key.sub=value are passed to the trainer as config overrides.
# See README.md ("Running on a Slurm cluster") for every variable, the log layout, resuming and chaining stages.
#
# --- defaults: edit here or override on the sbatch command line ----------------------------------
#SBATCH --job-name=hrkd-distill
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
##SBATCH --gpus-per-node=1
##SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
# (--ntasks-per-node = GPUs per node; "##SBATCH" lines are disabled, remove one "#" to enable.
#  --signal=B:USR1@300: USR1 to this script 300 s before the time limit -> checkpoint + requeue;
#  Slurm delivers it up to ~60 s late, so leave room for one step plus a checkpoint.)

set -uo pipefail

# The trainer's exit codes (hrkd_ds/errors.py; tests/slurm/test_exit_codes.py keeps them equal).
EXIT_USAGE=2                # bad input: fix it, resubmit
EXIT_PREEMPTED=3            # checkpointed on the time-limit warning / a signal: requeue
EXIT_DIVERGED=4             # non-finite loss: change a setting, resubmit
EXIT_COLLECTIVE_TIMEOUT=5   # a rank stopped answering (train.collective_timeout_s): requeue, it resumes
EXIT_DISK_FULL=6            # no space for a checkpoint/export: free space, resubmit with RUN_DIR
REQUEUE_CODES=($EXIT_PREEMPTED $EXIT_COLLECTIVE_TIMEOUT)
# A hung rank never exits: srun ends the step this long after the first rank left (its survivors
# exit on the collective timeout); the killed rank then sets srun's status, so the survivors' one
# line in the rank logs tells a timeout from a crash.
HUNG_RANK_GRACE=${HUNG_RANK_GRACE:-60}

log() { echo "[distill.sh $(date +%H:%M:%S)] $*"; }
die() { log "error: $*"; exit $EXIT_USAGE; }

[[ -n ${SLURM_JOB_ID:-} ]] || die "run me with sbatch (no SLURM_JOB_ID); for one machine use python hrkd_ds/train.py"

# --- where the repository is: $REPO_DIR, else the directory above this script as submitted -------
job_info=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null || true)
if [[ -z ${REPO_DIR:-} ]]; then
    script_path=$(sed -n 's/.* Command=\([^ ]*\).*/\1/p' <<<"$job_info")
    if [[ -n $script_path && -f $(dirname "$script_path")/launch_rank.sh ]]; then
        REPO_DIR=$(cd "$(dirname "$script_path")/.." && pwd)
    else
        REPO_DIR=$SLURM_SUBMIT_DIR
    fi
fi
export REPO_DIR
[[ -x $REPO_DIR/slurm/launch_rank.sh ]] || die "REPO_DIR=$REPO_DIR has no slurm/launch_rank.sh (set REPO_DIR)"

# --- what to run ---------------------------------------------------------------------------------
STAGE=${STAGE:-all}
if [[ $# -gt 0 && $1 =~ ^(all|general|teacher|distill|eval)$ ]]; then STAGE=$1; shift; fi  # the config's stages (tests/test_choices.py)
PYTHON=${PYTHON:-python}
TRAIN_SCRIPT=${TRAIN_SCRIPT:-hrkd_ds/train.py}
CONFIG=${CONFIG:-}               # experiment YAML; empty = the trainer's embedded default
DS_CONFIG=${DS_CONFIG:-}         # DeepSpeed JSON; empty = the trainer's default
TEACHER_FROM=${TEACHER_FROM:-}   # distill stage: finished teacher run dir (or HF dir)
TEACHER_JOB=${TEACHER_JOB:-}     # distill stage: job id of the teacher job -> its run dir under RUNS_DIR
MAX_REQUEUES=${MAX_REQUEUES:-20}
RUNS_DIR=${RUNS_DIR:-$SLURM_SUBMIT_DIR/runs}
# Per-job run directory; the job id survives requeue, so a requeued job finds its checkpoints here.
RUN_DIR=${RUN_DIR:-$RUNS_DIR/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
mkdir -p "$RUN_DIR/logs" || die "cannot create $RUN_DIR/logs"
RUN_DIR=$(cd "$RUN_DIR" && pwd)

# This run's time limit as an epoch (0 = unlimited/unknown): tells a time-limit kill from a scancel.
end_epoch=$(date -d "$(sed -n 's/.* EndTime=\([^ ]*\).*/\1/p' <<<"$job_info")" +%s 2>/dev/null || echo 0)

# Slurm's own output file of this job: link it into the run directory.
stdout_path=$(sed -n 's/.* StdOut=\([^ ]*\).*/\1/p' <<<"$job_info")
[[ -n $stdout_path && -e $stdout_path ]] && ln -sfn "$stdout_path" "$RUN_DIR/logs/slurm-batch.out"

if [[ -z $TEACHER_FROM && -n $TEACHER_JOB ]]; then
    shopt -s nullglob
    matches=("$RUNS_DIR"/*-"$TEACHER_JOB")
    shopt -u nullglob
    (( ${#matches[@]} == 1 )) || die "TEACHER_JOB=$TEACHER_JOB: expected one run dir $RUNS_DIR/*-$TEACHER_JOB, found ${#matches[@]}"
    TEACHER_FROM=${matches[0]}
fi
# Relative paths are taken from the submit directory when they exist there (the ranks run in
# REPO_DIR, where the trainer also looks).
from_submit_dir() { if [[ -n $1 && $1 != /* && -e $SLURM_SUBMIT_DIR/$1 ]]; then echo "$SLURM_SUBMIT_DIR/$1"; else echo "$1"; fi; }
TEACHER_FROM=$(from_submit_dir "$TEACHER_FROM")
CONFIG=$(from_submit_dir "$CONFIG")
DS_CONFIG=$(from_submit_dir "$DS_CONFIG")

case $STAGE in
    all) stage_args=() ;;
    *) stage_args=("stages=[$STAGE]") ;;
esac
[[ -n $TEACHER_FROM ]] && stage_args+=("teacher_from=$TEACHER_FROM")

cmd=("$PYTHON" "$TRAIN_SCRIPT")
[[ -n $CONFIG ]] && cmd+=(--config "$CONFIG")
[[ -n $DS_CONFIG ]] && cmd+=(--deepspeed "$DS_CONFIG")
cmd+=("output_dir=$RUN_DIR" ${stage_args[@]+"${stage_args[@]}"} "$@")

# --- rendezvous: first node's address (NodeAddr; node names need not resolve), port from job id --
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
node_addr=$(scontrol show node -o "$first_node" 2>/dev/null | sed -n 's/.* NodeAddr=\([^ ]*\).*/\1/p')
export MASTER_ADDR=${HRKD_MASTER_ADDR:-${node_addr:-$first_node}}
export MASTER_PORT=${HRKD_MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}

log "job $SLURM_JOB_ID ($SLURM_JOB_NAME) restart=${SLURM_RESTART_COUNT:-0} nodes=$SLURM_JOB_NODELIST tasks=$SLURM_NTASKS"
log "run dir: $RUN_DIR   (rank logs: $RUN_DIR/logs/rank<N>.log)"
log "master: $MASTER_ADDR:$MASTER_PORT   stage: $STAGE"
log "command: ${cmd[*]}"

# --- preemption: forward the warning signal to the training step ---------------------------------
# Bash runs traps only between foreground commands, so srun runs in the background and we `wait`.
SRUN_PID=
SRUN_T0=0
RESENDER_PID=
SIGNALLED=0 GOT_USR1=0 GOT_TERM=0
# Ranks ignore USR1 until the trainer installs its handler (launch_rank.sh), so a signal that
# lands during start-up would be lost: keep repeating it until the step ends (the trainer's
# handler only sets a flag, repeats are harmless).
start_resender() {
    [[ -n $RESENDER_PID || -z $SRUN_PID ]] && return
    # first resend once srun is >= 3 s old, then every second for a few seconds (a fast step may
    # finish before a 15 s repeat), then every RESIGNAL_EVERY seconds
    local first=$(( SRUN_T0 + 3 - SECONDS ))
    (( first < 1 )) && first=1
    ( n=0; delay=$first
      while sleep "$delay" && kill -0 "$SRUN_PID" 2>/dev/null; do
          kill -USR1 "$SRUN_PID" 2>/dev/null
          n=$(( n + 1 )); delay=$(( n < 5 ? 1 : ${RESIGNAL_EVERY:-15} ))
      done ) &
    RESENDER_PID=$!
}
forward() {
    SIGNALLED=1
    [[ $1 == USR1 ]] && GOT_USR1=1
    [[ $1 == TERM ]] && GOT_TERM=1
    log "received SIG$1: asking the trainer to checkpoint at the next step boundary"
    # srun forwards USR1 to every task; in its first seconds it may not handle USR1 yet (the
    # resender covers that window)
    if [[ -n $SRUN_PID ]] && (( SECONDS - SRUN_T0 >= 3 )) && kill -0 "$SRUN_PID" 2>/dev/null; then
        kill -USR1 "$SRUN_PID" 2>/dev/null || true
    fi
    start_resender
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

srun --kill-on-bad-exit=0 --wait="$HUNG_RANK_GRACE" --open-mode=append --output="$RUN_DIR/logs/rank%t.log" \
    "$REPO_DIR/slurm/launch_rank.sh" "${cmd[@]}" &
SRUN_PID=$!
SRUN_T0=$SECONDS
[[ $SIGNALLED == 1 ]] && start_resender   # a signal that came before srun existed

while :; do
    SIGNALLED_BEFORE=$SIGNALLED
    wait "$SRUN_PID"
    rc=$?
    # wait returns >128 when interrupted by a trapped signal; the step is still running then.
    if (( rc > 128 )) && kill -0 "$SRUN_PID" 2>/dev/null; then continue; fi
    if (( rc > 128 )) && [[ $SIGNALLED != "$SIGNALLED_BEFORE" ]]; then
        wait "$SRUN_PID"; rc2=$?   # the trap raced the step's exit: collect the real status
        (( rc2 != 127 )) && rc=$rc2
    fi
    break
done
SRUN_PID=
if [[ -n $RESENDER_PID ]]; then kill "$RESENDER_PID" 2>/dev/null; wait "$RESENDER_PID" 2>/dev/null; fi

# srun reports a killed (hung) rank's signal over the survivors' code: their last lines of this
# run (after its [launch_rank] line; the logs are appended across requeues) say which
this_run_ends() { awk '/^\[launch_rank\]/ { n = 0 } { last[n++ % 3] = $0 } END { for (i = 0; i < 3 && i < n; i++) print last[i] }' "$1"; }
timed_out_line() {
    local f ends=
    for f in "$RUN_DIR"/logs/rank*.log; do [[ -f $f ]] && ends+=$(this_run_ends "$f")$'\n'; done
    [[ $ends == *"hrkd_ds: error: collective timeout"* ]]
}
# With NCCL (GPUs) torch's watchdog aborts a rank on the same timeout before our line can be
# printed: its own line, then a C++ abort trace (status 134). Any line of this run saying so counts.
NCCL_WATCHDOG="Watchdog caught collective operation timeout"
nccl_watchdog_line() {
    local f
    for f in "$RUN_DIR"/logs/rank*.log; do
        [[ -f $f ]] && awk -v w="$NCCL_WATCHDOG" '/^\[launch_rank\]/ { seen = 0 } index($0, w) { seen = 1 } END { exit !seen }' "$f" && return 0
    done
    return 1
}
if (( rc > 128 )) && timed_out_line; then
    log "a rank stopped answering and was killed after the others timed out (srun status $rc)"
    rc=$EXIT_COLLECTIVE_TIMEOUT
elif (( rc > 128 )) && nccl_watchdog_line; then
    log "a rank stopped answering: NCCL's watchdog timed out a collective and aborted the rank (srun status $rc; see the rank logs)"
    rc=$EXIT_COLLECTIVE_TIMEOUT
fi

requeueable=0
for code in "${REQUEUE_CODES[@]}"; do (( rc == code )) && requeueable=1; done
if (( requeueable )); then
    restarts=${SLURM_RESTART_COUNT:-0}
    # SIGTERM without the USR1 warning is Slurm killing the job: a `scancel` stays cancelled (the
    # checkpoint is kept), a kill at the time limit (warning missed) still requeues.
    if (( rc == EXIT_PREEMPTED )) && [[ $GOT_USR1 == 0 && $GOT_TERM == 1 ]] && ! (( end_epoch > 0 && $(date +%s) >= end_epoch - 90 )); then
        log "job cancelled (SIGTERM before the time limit): checkpoint written, not requeueing; continue with RUN_DIR=$RUN_DIR sbatch slurm/distill.sh"
        exit $rc
    fi
    if (( restarts >= MAX_REQUEUES )); then
        log "trainer stopped with requeue-able exit $rc but job already requeued $restarts times (MAX_REQUEUES=$MAX_REQUEUES): giving up"
        exit $rc
    fi
    if (( rc == EXIT_PREEMPTED )); then
        log "trainer checkpointed and exited for preemption (exit $rc): requeueing job $SLURM_JOB_ID"
    else
        log "a rank stopped answering (collective timeout, exit $rc): requeueing job $SLURM_JOB_ID to resume from the last checkpoint"
    fi
    if scontrol requeue "$SLURM_JOB_ID"; then
        exit 0
    fi
    log "scontrol requeue failed (job cancelled or not requeueable?); resubmit with RUN_DIR=$RUN_DIR to resume"
    exit $rc
fi
if (( rc != 0 )); then
    log "training failed with exit code $rc (see $RUN_DIR/logs/rank*.log)"
    exit "$rc"
fi
log "done: $RUN_DIR/results.json"
exit 0
