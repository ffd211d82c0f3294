#!/bin/bash
#SBATCH --job-name=lm_transformer
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Causal pre-LN Transformer language model on the course corpus (lm/configs/transformer_best.yaml, 52.0M).
# Arguments are config overrides, e.g.  sbatch slurm/lm_transformer.sh train.lr=5e-4 run.seed=1
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts lm "${CONFIG:-lm/configs/transformer.yaml}" "$@"
