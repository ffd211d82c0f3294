# Shared body of the dgx2 sbatch templates (sourced by them; never submitted alone).
#
# train_with_restarts PROJECT CONFIG [key=value ...]
#   runs `python -m PROJECT.train --config CONFIG run.name=RUN --resume` and, when it finishes,
#   `python -m PROJECT.evaluate runs/PROJECT/RUN`. On the warning signal before the time limit
#   (--signal=B:USR1@<margin>) the training checkpoints and exits with 75 (EXIT_PREEMPTED in
#   common/preemption.py); the job then restarts itself and the next job resumes from the
#   checkpoint. A finished run (runs/PROJECT/RUN/FINISHED) is never restarted; any other failure is
#   not restarted either.
#
# Environment knobs:
#   RUN_NAME      run folder name (default <job name>-<job id>; set it to continue an older run)
#   RESTART       requeue (default: `scontrol requeue`, same job id; falls back to resubmission when
#                 the cluster refuses) | resubmit (`sbatch --dependency=afterany:<this job>`)
#   MAX_RESTARTS  cap on restarts of one run (default 20, i.e. 21 x 12 h)
#   EVALUATE      1 (default): run evaluate.py when training finishes; 0: skip it
#   LAUNCHER      how to start python (default `python`; torchrun / srun in the multi-GPU templates)
#   CONDA_ENV     conda environment to activate (default perception-course, from env.yaml)

EXIT_PREEMPTED=75
EXIT_DIVERGED=3       # EXIT_DIVERGED in common/monitor.py: never requeued
TEMPLATE_ARGS=("$@")  # the template's own arguments, for a resubmission
MAX_RESTARTS=${MAX_RESTARTS:-20}

cd "${SLURM_SUBMIT_DIR:-$PWD}" || exit 1
if [[ ! -f slurm/_job.sh ]]; then
    echo "error: submit from the repository root, e.g. sbatch slurm/lm_lstm.sh" >&2
    exit 1
fi
mkdir -p runs/slurm

activate_environment() {
    local env_name=${CONDA_ENV:-perception-course}
    if command -v conda >/dev/null && conda env list | awk '{print $1}' | grep -qx "$env_name"; then
        # shellcheck disable=SC1091
        source "$(conda info --base)/etc/profile.d/conda.sh" && conda activate "$env_name"
    elif [[ -x .venv/bin/python ]]; then
        # shellcheck disable=SC1091
        source .venv/bin/activate
    else
        echo "error: no Python environment: conda env create -f env.yaml (or make test, which builds .venv)" >&2
        exit 1
    fi
}

# Send a signal to the training: to python itself, or to the workers under torchrun / srun.
forward_signal() {
    local sig=$1 pid=$2
    if [[ "${LAUNCHER:-python}" == python ]]; then
        kill -"$sig" "$pid" 2>/dev/null
    else
        pkill -"$sig" -P "$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null
    fi
}

restart_job() {
    local restarts=$1 run_name=$2 template
    if (( restarts >= MAX_RESTARTS )); then
        echo "not restarting: reached MAX_RESTARTS=$MAX_RESTARTS. Continue by hand: RUN_NAME=$run_name sbatch <template>"
        return 1
    fi
    if [[ "${RESTART:-requeue}" == requeue ]]; then
        # Said first: a successful requeue ends this script at once.
        echo "requeueing job $SLURM_JOB_ID (restart $((restarts + 1)) of at most $MAX_RESTARTS)"
        scontrol requeue "$SLURM_JOB_ID" && return 0
        echo "the requeue was refused"
    fi
    template=$(scontrol show job -o "$SLURM_JOB_ID" | tr ' ' '\n' | sed -n 's/^Command=//p')
    echo "resubmitting $template after job $SLURM_JOB_ID (restart $((restarts + 1)) of at most $MAX_RESTARTS)"
    RUN_NAME=$run_name RESUBMITS=$((restarts + 1)) sbatch --dependency="afterany:$SLURM_JOB_ID" \
        ${SLURM_ARRAY_TASK_ID:+--array=$SLURM_ARRAY_TASK_ID} "$template" "${TEMPLATE_ARGS[@]}"
}

train_with_restarts() {
    local project=$1 config=$2 arg rc pid
    shift 2
    local run_name=${RUN_NAME:-${SLURM_JOB_NAME:-$project}-${SLURM_JOB_ID:-local}} runs_root=runs
    for arg in "$@"; do  # a run.name / run.root override on the command line wins
        case $arg in run.name=*) run_name=${arg#run.name=} ;; run.root=*) runs_root=${arg#run.root=} ;; esac
    done
    local run_dir=$runs_root/$project/$run_name
    local restarts=$(( ${SLURM_RESTART_COUNT:-0} + ${RESUBMITS:-0} ))
    if [[ -f $run_dir/FINISHED ]]; then
        echo "$run_dir already finished; nothing to do"
        return 0
    fi
    activate_environment
    echo "[$(date +%FT%T)] job ${SLURM_JOB_ID:-none} on $(hostname), restart $restarts: $project $config run.name=$run_name $*"
    # shellcheck disable=SC2086
    ${LAUNCHER:-python} -m "$project.train" --config "$config" "run.name=$run_name" "$@" --resume &
    pid=$!
    stop_requested=0
    trap 'echo "[$(date +%T)] time limit near: asking the training to checkpoint"; stop_requested=1; forward_signal USR1 $pid' USR1
    trap 'stop_requested=1; forward_signal TERM $pid' TERM
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done  # a trapped signal interrupts wait
    wait "$pid"
    rc=$?
    trap - USR1 TERM
    # Killed by the forwarded signal before its handler was installed (still importing): nothing
    # was lost since the last checkpoint, so this too is a preemption.
    if (( stop_requested && (rc == 128 + 10 || rc == 128 + 15) )); then
        echo "the signal arrived before the training could checkpoint; restarting from the last checkpoint"
        rc=$EXIT_PREEMPTED
    fi
    # A signal that came after the last step (the run wrote FINISHED) is no preemption.
    if [[ -f $run_dir/FINISHED ]] && (( rc == EXIT_PREEMPTED || rc == 128 + 10 || rc == 128 + 15 )); then
        rc=0
    fi
    case $rc in
        0) if [[ ${EVALUATE:-1} == 1 ]]; then
               echo "[$(date +%T)] training finished; evaluating"
               # The time-limit warning may come now: without a trap it would kill this script
               # mid-evaluation (the job then FAILED); with one, bash waits for the evaluation.
               trap 'echo "[$(date +%T)] time limit near during the evaluation: it goes on until the limit"' USR1
               python -m "$project.evaluate" "$run_dir"
               trap - USR1
           else
               echo "[$(date +%T)] training finished"
           fi ;;
        "$EXIT_PREEMPTED") restart_job "$restarts" "$run_name" ;;
        "$EXIT_DIVERGED") echo "training diverged (non-finite loss, see above): not restarted; lower train.lr or clip gradients, then start a new run or resubmit with RUN_NAME=$run_name"
           return "$rc" ;;
        *) echo "training failed with exit code $rc: not restarted (fix the error above, then resubmit with RUN_NAME=$run_name)"
           return "$rc" ;;
    esac
}
