#!/bin/bash
#SBATCH --job-name=valle_ar
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# VALL-E autoregressive stage (first codebook), trained alone (train.models=ar) on 100 h;
# CONFIG=valle_tts/configs/base_360h.yaml or base_960h.yaml for the larger sizes. Arguments are
# config overrides. Evaluate the pair with slurm/valle_eval.sh (AR_RUN=... NAR_RUN=...).
# RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
EVALUATE=0 train_with_restarts valle_tts "${CONFIG:-valle_tts/configs/base_100h.yaml}" train.models=ar "$@"
