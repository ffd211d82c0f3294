#!/bin/bash
#SBATCH --job-name=valle_nar
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# VALL-E non-autoregressive model (codebooks 2-8), 100 h.
# Arguments are config overrides, e.g.  sbatch slurm/valle_nar.sh data.hours=960
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts valle_tts "${CONFIG:-valle_tts/configs/nar_100h.yaml}" "$@"
