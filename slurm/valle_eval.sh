#!/bin/bash
#SBATCH --job-name=valle_eval
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --open-mode=append --output=runs/slurm/%x-%j.out
# VALL-E synthesis + evaluation (whisper WER, ECAPA-TDNN speaker similarity) of a trained pair:
#   AR_RUN=runs/valle_tts/valle_ar-1234 NAR_RUN=runs/valle_tts/valle_nar-1240 sbatch slurm/valle_eval.sh
# (NAR_RUN may be left out when AR_RUN trained both stages). Arguments are eval.*/synth.* overrides.
# Pretrained EnCodec, whisper and ECAPA weights must be in the caches first (valle_tts/README.md).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
activate_environment
python -m valle_tts.evaluate "${AR_RUN:?set AR_RUN=runs/valle_tts/<AR run>}" ${NAR_RUN:+--nar "$NAR_RUN"} "$@"
