#!/bin/bash
#SBATCH --job-name=valle_ar
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# VALL-E autoregressive model (first codebook), 100 h LibriTTS/LibriSpeech.
# Arguments are config overrides, e.g.  sbatch slurm/valle_ar.sh data.hours=960
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts valle_tts "${CONFIG:-valle_tts/configs/ar_100h.yaml}" "$@"
