#!/bin/bash
#SBATCH --job-name=captioning_attention
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Show-Attend-Tell: ResNet-101 14x14 features + soft-attention LSTM on Flickr8k.
# Arguments are config overrides, e.g.  sbatch slurm/captioning_attention.sh decode.beam_size=5
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts captioning "${CONFIG:-captioning/configs/resnet101_lstm.yaml}" "$@"
