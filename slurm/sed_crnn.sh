#!/bin/bash
#SBATCH --job-name=sed_crnn
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# CRNN for weakly supervised sound event detection (DCASE2018 Task 4).
# Arguments are config overrides, e.g.  sbatch slurm/sed_crnn.sh augment.mixup=true data.root=/path/to/dcase2018_task4
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts sed "${CONFIG:-sed/configs/baseline.yaml}" "$@"
