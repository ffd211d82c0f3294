#!/bin/bash
#SBATCH --job-name=sweep
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%A_%a.out
# One grid point per array task; written and submitted by `python -m common.sweep ... --slurm`
# (with --array=0-N%1: one running job per account). Arguments: PROJECT CONFIG POINTS_FILE, where
# line i+1 of POINTS_FILE is "<run name> key=value ..." for array task i.
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
read -r point_name point_overrides <<< "$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$3")"
# shellcheck disable=SC2086
RUN_NAME=$point_name train_with_restarts "$1" "$2" $point_overrides
