#!/bin/bash
#SBATCH --job-name=av_scene_fusion
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Audio-visual scene classification, the course baseline's intermediate fusion.
# Arguments are config overrides, e.g.  sbatch slurm/av_scene_fusion.sh train.label_smoothing=0.1
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts av_scene "${CONFIG:-av_scene/configs/baseline.yaml}" "$@"
