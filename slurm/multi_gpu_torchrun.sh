#!/bin/bash
#SBATCH --job-name=multi_gpu
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:4 --cpus-per-task=10 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Any project on several GPUs of one node: torchrun starts one process per GPU and
# common/distributed.py sets up DDP (nccl). The batch size in the config is the global batch.
#   PROJECT=lm CONFIG=lm/configs/transformer.yaml sbatch --gres=gpu:4 slurm/multi_gpu_torchrun.sh
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
LAUNCHER="torchrun --standalone --nproc_per_node=${SLURM_GPUS_ON_NODE:-1}" \
    train_with_restarts "${PROJECT:?set PROJECT, e.g. PROJECT=lm}" "${CONFIG:?set CONFIG=<project>/configs/<name>.yaml}" "$@"
