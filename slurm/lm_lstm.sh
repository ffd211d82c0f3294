#!/bin/bash
#SBATCH --job-name=lm_lstm
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Word-level AWD-style LSTM language model on the course corpus (lm/configs/lstm_best.yaml, 52.3M parameters).
# Arguments are config overrides, e.g.  sbatch slurm/lm_lstm.sh train.lr=20 run.seed=1
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts lm "${CONFIG:-lm/configs/lstm.yaml}" "$@"
