#!/bin/bash
#SBATCH --job-name=valle_aishell3
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# VALL-E on Mandarin (AISHELL-3, pinyin tokens): AR and NAR together, then the evaluation (CER with
# whisper medium, language zh; ECAPA similarity). The corpus must be in data/aishell3 (train/, test/,
# spk-info.txt), or add data.download=true on a node with internet. Arguments are config overrides;
# train.models=ar / nar with EVALUATE=0 trains one stage (then slurm/valle_eval.sh for the pair).
# RUN_NAME=<name> continues an existing run (see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
train_with_restarts valle_tts "${CONFIG:-valle_tts/configs/aishell3.yaml}" "$@"
