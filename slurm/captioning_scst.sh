#!/bin/bash
#SBATCH --job-name=captioning_scst
#SBATCH --partition=dgx2 --nodes=1 --gres=gpu:1 --cpus-per-task=6 --time=12:00:00
#SBATCH --signal=B:USR1@600 --requeue --open-mode=append --output=runs/slurm/%x-%j.out
# Cross-entropy, then self-critical sequence training, on Flickr8k: the course baseline
# (XE_CONFIG, default captioning/configs/resnet101_lstm.yaml) as run <name>, evaluated; then SCST
# from its best.pt (CONFIG, default captioning/configs/resnet101_lstm_scst.yaml) as run <name>-scst,
# evaluated. A job stopped by the 12-hour limit in either phase requeues itself and continues where
# it stopped; a finished cross-entropy run is not trained again.
# Arguments are config overrides for both phases (data.*, encoder.*, decoder.* must match anyway);
# SCST_ARGS="train.lr=2e-5 train.scst_baseline=mean" adds overrides for the SCST phase only.
# RUN_NAME=<name> continues an existing pair (the cross-entropy run's name; see slurm/_job.sh).
source "${SLURM_SUBMIT_DIR:-.}/slurm/_job.sh" "$@"
runs_root=runs
for arg in "$@"; do
    case $arg in
        run.name=*) echo "error: the two runs are named from RUN_NAME (<name> and <name>-scst): use RUN_NAME=${arg#run.name=} sbatch $0" >&2
                    exit 2 ;;
        run.root=*) runs_root=${arg#run.root=} ;;
    esac
done
read -ra scst_args <<< "${SCST_ARGS:-}"
base=${RUN_NAME:-${SLURM_JOB_NAME:-captioning_scst}-${SLURM_JOB_ID:-local}}
base=${base%-scst}  # a job resubmitted during the SCST phase is given the SCST run's name

RUN_NAME=$base train_with_restarts captioning "${XE_CONFIG:-captioning/configs/resnet101_lstm.yaml}" "$@" || exit
# Not finished: this job resubmitted itself during the cross-entropy phase (a requeue ends it at once).
[[ -f $runs_root/captioning/$base/FINISHED ]] || exit 0
RUN_NAME=$base-scst train_with_restarts captioning "${CONFIG:-captioning/configs/resnet101_lstm_scst.yaml}" \
    "train.init_from=$runs_root/captioning/$base" "$@" "${scst_args[@]}"
