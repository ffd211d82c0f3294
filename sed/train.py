"""Train a CRNN for weakly supervised sound event detection (DCASE2018 Task 4) on clip labels only.

    python -m sed.train --config sed/configs/baseline.yaml [--resume [CKPT]] [key.sub=value ...]

config -> features (prepare.py, idempotent) -> stratified weak train/valid split -> model ->
AdamW + plateau decay -> epochs of BCE on clip probabilities (augmentation switches) -> valid mAP
each epoch (best.pt, lr decay, early stopping). evaluate.py turns best.pt into events and metrics.
With train.method=mean_teacher, batches mix in unlabelled clips and a consistency loss with an EMA
teacher (sed/mean_teacher.py) is added to the BCE of the weak clips.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import ConfigError, cli_main, parse_args
from common.device import amp_dtype, autocast, grad_scaler, pick_device, set_cpu_threads
from common.distributed import (
    cleanup_distributed,
    device_for,
    main_rank_first,
    setup_distributed,
)
from common.log import TensorBoard, epoch_line
from common.monitor import TrainMonitor
from common.params import count_parameters
from common.preemption import PreemptionFlag, any_rank_requested
from common.run import is_finished, mark_finished, prepare_run_dir, write_summary
from common.seeding import seed_everything
from sed.augment import augment_batch, mean_teacher_views
from sed.config import CLASSES, Config
from sed.data import (
    ClipSet,
    TrainBatches,
    band_stats,
    frames_per_clip,
    is_labelled,
    label_matrix,
    load_features,
    stratified_split,
    unlabelled_set,
)
from sed.mean_teacher import consistency_loss, ema_update, judges_teacher, make_teacher, sigmoid_rampup
from sed.metrics import tagging
from sed.models import build_model
from sed.prepare import prepare_data
from sed.pseudo_labels import pseudo_labelled_clips, unlabelled_splits


def weak_datasets(cfg: Config, train_split, pseudo_labelled=None):
    """The weak clips split (multi-label stratified) into train and valid, normalised per mel band
    with statistics of the train part only. Returns train_set, valid_set, band_mean, band_std.
    pseudo_labelled: (raw features, targets) of more clips for the train part only."""
    targets = label_matrix([train_split.weak[f] for f in train_split.filenames])
    train_idx, valid_idx = stratified_split(targets, cfg.data.valid_fraction, cfg.data.split_seed)
    if len(train_idx) == 0 or len(valid_idx) == 0:
        raise ConfigError(f"data.valid_fraction={cfg.data.valid_fraction} leaves {len(train_idx)} train and "
                          f"{len(valid_idx)} valid clips of the {len(targets)} weak clips; both need some")
    features, lengths = load_features(train_split.h5_path, train_split.filenames, frames_per_clip(cfg.features))
    mean, std = band_stats(features[train_idx], lengths[train_idx])
    if len(valid_idx) < 2 * len(CLASSES):
        print(f"warning: the valid split has only {len(valid_idx)} clips: its mAP saturates early and chooses "
              f"best.pt poorly; raise data.valid_fraction ({cfg.data.valid_fraction}) if the data allow")
    print(f"weak clips: {len(train_idx)} train, {len(valid_idx)} valid "
          f"(stratified, seed {cfg.data.split_seed}); {features.shape[1]} frames x {features.shape[2]} bands")
    train_features, train_targets = features[train_idx], targets[train_idx]
    if pseudo_labelled is not None:
        train_features = np.concatenate([train_features, pseudo_labelled[0]])
        train_targets = np.concatenate([train_targets, pseudo_labelled[1]])
        print(f"train clips with the pseudo-labelled ones: {len(train_features)}")
    return (ClipSet(train_features, train_targets, mean, std),
            ClipSet(features[valid_idx], targets[valid_idx], mean, std), mean, std)


def unlabelled_dataset(cfg: Config, splits: dict, band_mean, band_std) -> ClipSet:
    """Every clip of the unlabelled splits (data.unlabelled_audio), normalised like the weak ones."""
    unlabelled = unlabelled_splits(splits, "train.method=mean_teacher")
    n_frames = frames_per_clip(cfg.features)
    parts = [load_features(s.h5_path, s.filenames, n_frames)[0] for s in unlabelled]
    features = parts[0] if len(parts) == 1 else np.concatenate(parts)  # no copy of the usual single folder
    print(f"unlabelled clips: {len(features)} ({', '.join(s.name for s in unlabelled)})")
    return unlabelled_set(features, len(CLASSES), band_mean, band_std)


def weak_label_loss(clip_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the clip probabilities (fp32, logs clamped at -100 like
    F.binary_cross_entropy). Written out so that a NaN probability of a diverged model gives a NaN
    loss for the divergence check, where F.binary_cross_entropy stops with an input-range error (on
    CUDA a device-side assert that takes the process down)."""
    probs = clip_probs.float()
    log_p, log_not_p = probs.log().clamp_min(-100), (-probs).log1p().clamp_min(-100)
    return -(targets * log_p + (1 - targets) * log_not_p).mean()


def selection_key(metrics: dict) -> tuple[float, float]:
    """best.pt is the epoch with the highest valid mAP; a tie (a small valid split saturates at 1.0,
    from epoch 0 on) goes to the lower valid loss, not to the earliest epoch."""
    return metrics["valid_mAP"], -metrics["valid_loss"]


@torch.no_grad()
def predict(model, mels: torch.Tensor, device, batch_size: int = 64, dtype=None):
    """Normalised mels (clips, time, n_mels) -> frame_probs (clips, time, classes), clip_probs (clips, classes)."""
    model.eval()
    frame_probs, clip_probs = [], []
    for start in range(0, len(mels), batch_size):
        with autocast(device, dtype):
            frames, clips = model(mels[start:start + batch_size].to(device))
        frame_probs.append(frames.float().cpu())
        clip_probs.append(clips.float().cpu())
    return torch.cat(frame_probs), torch.cat(clip_probs)


def validate(model, valid_set, device, dtype, tag_threshold: float) -> dict:
    _, clip_probs = predict(model, valid_set.features, device, dtype=dtype)
    loss = weak_label_loss(clip_probs, valid_set.targets).item()
    if not math.isfinite(loss):  # diverged weights: main() stops on it (scikit-learn would raise on NaN)
        return {"valid_loss": loss}
    return {"valid_loss": loss, **{f"valid_{k}": v for k, v in
                                   tagging(valid_set.targets.numpy(), clip_probs.numpy(), tag_threshold).items()}}


@cli_main
def main(argv=None):
    cfg, args = parse_args(Config, argv, description=__doc__.split("\n\n")[0])
    preemption = PreemptionFlag()  # first: a signal during start-up is kept until the first step
    set_cpu_threads(cfg.run.cpu_threads)
    dist_info = setup_distributed(cfg.run.device)
    device = device_for(dist_info, pick_device(cfg.run.device))
    seed_everything(cfg.run.seed + dist_info.rank, cfg.run.deterministic)  # each rank its own noise
    run_dir = prepare_run_dir("sed", cfg, device, resume=args.resume is not None, is_main=dist_info.is_main)
    if is_finished(run_dir):
        print(f"{run_dir} already finished (evaluate it with: python -m sed.evaluate {run_dir})")
        return

    # ---- data: features are extracted once by the main rank, the others read them
    with main_rank_first(dist_info):
        splits = prepare_data(cfg)
        pseudo_labelled = (pseudo_labelled_clips(cfg, splits, run_dir, device, dist_info.is_main,
                                                 resuming=args.resume is not None)
                           if cfg.train.pseudo_labels_from else None)
    train_set, valid_set, band_mean, band_std = weak_datasets(cfg, splits["train"], pseudo_labelled)
    del pseudo_labelled  # the train set holds its own (normalised) copy
    per_rank_batch = cfg.train.batch_size // dist_info.world_size
    mt = cfg.train.mean_teacher
    use_teacher = cfg.train.method == "mean_teacher"
    dataset, n_unlabelled, unlabelled_clips = train_set, 0, 0
    if use_teacher:
        if cfg.augment.mixup:
            raise ConfigError("augment.mixup mixes weak labels, which unlabelled clips do not have; "
                              "set augment.mixup=false with train.method=mean_teacher")
        unlabelled = unlabelled_dataset(cfg, splits, band_mean, band_std)
        n_unlabelled, unlabelled_clips = round(per_rank_batch * mt.unlabelled_fraction), len(unlabelled)
        if not 0 < n_unlabelled < per_rank_batch or unlabelled_clips < dist_info.world_size:
            raise ConfigError(f"train.mean_teacher.unlabelled_fraction={mt.unlabelled_fraction} of a batch of "
                              f"{per_rank_batch} per rank leaves {n_unlabelled} unlabelled and "
                              f"{per_rank_batch - n_unlabelled} weak clips; both need some")
        dataset = torch.utils.data.ConcatDataset([train_set, unlabelled])
    batches = TrainBatches(train_set.targets.numpy(), per_rank_batch - n_unlabelled, unlabelled_clips, n_unlabelled,
                           balanced=cfg.train.sampler == "class_balanced", seed=cfg.run.seed, rank=dist_info.rank,
                           world_size=dist_info.world_size)
    # its own generator: the loader draws a base seed at every epoch, which must not use the global RNG
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, generator=torch.Generator())
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} takes {per_rank_batch - n_unlabelled} weak clips "
                          f"per batch, more than the {len(train_set)} training clips; lower it")

    # ---- model, optimizer, plateau schedule
    model = build_model(cfg.model, cfg.features.n_mels, len(CLASSES)).to(device)
    n_params = count_parameters(model)
    print(f"model {cfg.model.name} ({cfg.model.pooling} pooling): {n_params:,} parameters")
    train_model = torch.nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model
    teacher = make_teacher(model) if use_teacher else None
    # the model that valid mAP (best.pt, lr decay, early stopping) and evaluate.py judge
    judged = teacher if judges_teacher(cfg) else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.train.plateau_factor,
                                                           patience=cfg.train.plateau_patience)
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, dtype)
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)
    tb = TensorBoard(run_dir, enabled=dist_info.is_main)
    loss_names = ("loss", "supervised_loss", "consistency_loss") if use_teacher else ("loss",)
    monitor = TrainMonitor(device, loss_names, checkpointer, run_dir if dist_info.is_main else None,
                           fp16_scaler=scaler.is_enabled())

    # ---- resume
    epoch, step, step_in_epoch, bad_epochs, train_seconds, clips_seen = 0, 0, 0, 0, 0.0, 0
    best, best_epoch, history = (-math.inf, -math.inf), -1, []  # best: selection_key of best.pt
    state = load_for_resume(checkpointer, args.resume)
    if state is not None:
        counters = restore_training_state(state, model, optimizer, scheduler, scaler)
        epoch, step, step_in_epoch, bad_epochs = (counters[k] for k in ("epoch", "step", "step_in_epoch", "bad_epochs"))
        best, best_epoch, history = counters["best"], counters["best_epoch"], counters["history"]
        train_seconds, clips_seen = counters["train_seconds"], counters["clips_seen"]
        monitor.load_state_dict(counters["monitor"])  # this epoch's running train loss
        if teacher is not None:
            if counters.get("teacher") is None:
                raise ConfigError("the checkpoint has no teacher (a supervised run); a mean-teacher run starts "
                                  "fresh or resumes a mean-teacher checkpoint")
            teacher.load_state_dict(counters["teacher"])

    def save(is_best=False):
        monitor.sync()  # never checkpoint diverged weights
        return checkpointer.save(training_state(
            model, optimizer, scheduler, scaler, epoch=epoch, step=step, step_in_epoch=step_in_epoch,
            bad_epochs=bad_epochs, best=best, best_epoch=best_epoch, history=history,
            train_seconds=train_seconds, clips_seen=clips_seen, monitor=monitor.state_dict(), band_mean=band_mean,
            band_std=band_std, model_name=cfg.model.name,
            teacher=teacher.state_dict() if teacher is not None else None), step, is_best)

    # ---- the loop
    while epoch < cfg.train.epochs and bad_epochs < cfg.train.early_stop_patience:
        batches.set_epoch(epoch, start_step=step_in_epoch, global_step=step)
        train_model.train()
        if teacher is not None:
            teacher.train()  # dropout and batch statistics: the teacher's own noise, as in the paper
        epoch_start = clock = time.time()  # clock: start of the time not yet in train_seconds
        for mels, targets in loader:
            losses = {}
            if teacher is None:
                mels, targets = augment_batch(mels, targets, cfg.augment)
                with autocast(device, dtype):
                    _, clip_probs = train_model(mels.to(device))
                # BCE on the clip probabilities: the only supervision is the weak (clip) label.
                loss = weak_label_loss(clip_probs, targets.to(device))
            else:
                student_mels, teacher_mels = mean_teacher_views(mels, cfg.augment, mt.noise_std)
                with autocast(device, dtype):
                    frame_probs, clip_probs = train_model(student_mels.to(device))
                    with torch.no_grad():
                        teacher_frames, teacher_clips = teacher(teacher_mels.to(device))
                # BCE on the weak labels of the labelled clips only; consistency with the teacher on all clips.
                labelled, targets = is_labelled(targets).to(device), targets.to(device)
                losses["supervised_loss"] = weak_label_loss(clip_probs[labelled], targets[labelled])
                losses["consistency_loss"] = consistency_loss(frame_probs, clip_probs, teacher_frames, teacher_clips,
                                                              mt.frame_weight)
                weight = mt.consistency_weight * sigmoid_rampup(step, mt.rampup_epochs * steps_per_epoch)
                loss = losses["supervised_loss"] + weight * losses["consistency_loss"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            step_in_epoch += 1
            if teacher is not None:
                ema_update(teacher, model, mt.ema_decay, step)
            clips_seen += len(mels) * dist_info.world_size
            monitor.add(step, loss=loss, **losses)
            if step % cfg.train.log_every_steps == 0:
                tb.log(step, {**{f"{name}/train": value for name, value in monitor.interval_means(step).items()},
                              "lr": optimizer.param_groups[0]["lr"]})
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                train_seconds += time.time() - clock
                clock = time.time()
                save()
            if any_rank_requested(preemption):
                train_seconds += time.time() - clock
                preemption.exit(save())
        train_seconds += time.time() - clock
        train_losses = monitor.epoch_means(step)  # stops here on divergence, before validating NaN weights
        metrics = validate(judged, valid_set, device, dtype, cfg.postprocess.tag_threshold)
        monitor.check_finite(step, "validation loss", metrics["valid_loss"])
        scheduler.step(metrics["valid_mAP"])
        # A mean teacher is a candidate for best.pt only once its consistency ramp-up is over: earlier it
        # is little more than the averaged initial weights, which a small valid split can rank first
        # (measured: an epoch-0 teacher chosen, eval event F1 0.000; sed/README.md).
        eligible = not use_teacher or epoch + 1 >= min(mt.rampup_epochs, cfg.train.epochs)
        is_best = eligible and selection_key(metrics) > best
        best, best_epoch = (selection_key(metrics), epoch) if is_best else (best, best_epoch)
        bad_epochs = 0 if is_best or not eligible else bad_epochs + 1
        metrics = {**{f"train_{name}": value for name, value in train_losses.items()}, **metrics,
                   "lr": optimizer.param_groups[0]["lr"]}
        history.append({"epoch": epoch, **metrics})
        tb.log(step, {f"epoch/{k}": v for k, v in metrics.items()})
        if dist_info.is_main:
            print(epoch_line(epoch, metrics, time.time() - epoch_start), flush=True)
        epoch, step_in_epoch = epoch + 1, 0
        save(is_best)
    if bad_epochs >= cfg.train.early_stop_patience:
        print(f"early stop: valid mAP has not improved for {bad_epochs} epochs "
              f"(best {best[0]:.4f} at epoch {best_epoch})")

    if dist_info.is_main:
        clips_per_s = clips_seen / max(train_seconds, 1e-9)
        write_summary(run_dir, model=f"{cfg.model.name}-{cfg.model.pooling}", metrics={"valid_mAP": best[0]},
                      params=n_params, method=cfg.train.method, best_epoch=best_epoch, epochs_trained=epoch,
                      train_seconds=round(train_seconds, 2), train_clips_per_s=round(clips_per_s, 1),
                      device=str(device))
        mark_finished(run_dir)
        print(f"done: best valid mAP {best[0]:.4f} (epoch {best_epoch}); "
              f"{clips_per_s:.1f} training clips/s; run folder {run_dir}")
    tb.close()
    preemption.finish()  # exit 0 even if a signal arrived after the last step
    del train_model  # before the process group: see common.distributed.cleanup_distributed
    cleanup_distributed()


if __name__ == "__main__":
    main()
