#!/bin/bash
#SBATCH --job-name=vae_conv
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Convolutional VAE on MNIST, latent size 2 (grid over [-5, 5]^2); CONFIG=vae/configs/best.yaml for the best -ELBO.
# Arguments are config overrides, e.g.  sbatch slurm/vae_conv.sh model.latent_dim=20
# CONFIG=<yaml> picks another config; RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts vae "${CONFIG:-vae/configs/conv_z2.yaml}" "$@"
