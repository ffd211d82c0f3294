#!/bin/bash
#SBATCH --job-name=sed_mean_teacher
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Mean teacher on DCASE2018 Task 4: the CRNN with context gating learns from the weak clips and the
# unlabelled in-domain clips (sed/configs/mean_teacher.yaml); the EMA teacher is evaluated.
# Arguments are config overrides, e.g.  sbatch slurm/sed_mean_teacher.sh data.root=/path/to/dcase2018_task4
# The course's folder (label/..., read as it is):  sbatch slurm/sed_mean_teacher.sh data.root=<course data>
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts sed "${CONFIG:-sed/configs/mean_teacher.yaml}" "$@"
