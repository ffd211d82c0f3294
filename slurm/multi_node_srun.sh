#!/bin/bash
#SBATCH --job-name=multi_node
#SBATCH --partition=dgx2 --nodes=2 --ntasks-per-node=4 --gres=gpu:4 --cpus-per-task=2 --time=12:00:00
#SBATCH --signal=USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Any project on several nodes: srun starts one task per GPU; common/distributed.py reads
# SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and takes the first node as the master. The warning
# signal goes to every task (no B: prefix), and all ranks stop at the same step.
#   PROJECT=lm CONFIG=lm/configs/transformer.yaml sbatch slurm/multi_node_srun.sh
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
LAUNCHER="srun python" \
    train_with_restarts "${PROJECT:?set PROJECT, e.g. PROJECT=lm}" "${CONFIG:?set CONFIG=<project>/configs/<name>.yaml}" "$@"
