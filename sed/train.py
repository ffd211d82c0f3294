"""Train a CRNN for weakly supervised sound event detection (DCASE2018 Task 4) on clip labels only.

    python -m sed.train --config sed/configs/baseline.yaml [--resume [CKPT]] [key.sub=value ...]

config -> features (prepare.py, idempotent) -> stratified weak train/valid split -> model ->
AdamW + plateau decay -> epochs of BCE on clip probabilities (augmentation switches) -> valid mAP
each epoch (best.pt, lr decay, early stopping). evaluate.py turns best.pt into events and metrics.
"""
from __future__ import annotations

import math
import time

import torch

from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import ConfigError, cli_main, parse_args
from common.device import amp_dtype, autocast, grad_scaler, pick_device, set_cpu_threads
from common.distributed import (
    ResumableSampler,
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
from sed.augment import augment_batch
from sed.config import CLASSES, Config
from sed.data import ClipSet, band_stats, frames_per_clip, label_matrix, load_features, stratified_split
from sed.metrics import tagging
from sed.models import build_model
from sed.prepare import prepare_data


def weak_datasets(cfg: Config, train_split):
    """The weak clips split (multi-label stratified) into train and valid, normalised per mel band
    with statistics of the train part only. Returns train_set, valid_set, band_mean, band_std."""
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
    return (ClipSet(features[train_idx], targets[train_idx], mean, std),
            ClipSet(features[valid_idx], targets[valid_idx], mean, std), mean, std)


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
    train_set, valid_set, band_mean, band_std = weak_datasets(cfg, splits["train"])
    per_rank_batch = cfg.train.batch_size // dist_info.world_size
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=cfg.run.seed, rank=dist_info.rank,
                               world_size=dist_info.world_size, drop_last=True)
    loader = torch.utils.data.DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler,
                                         drop_last=True, generator=torch.Generator())
    if len(loader) == 0:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the {len(train_set)} "
                          f"training clips; lower it")

    # ---- model, optimizer, plateau schedule
    model = build_model(cfg.model, cfg.features.n_mels, len(CLASSES)).to(device)
    n_params = count_parameters(model)
    print(f"model {cfg.model.name} ({cfg.model.pooling} pooling): {n_params:,} parameters")
    train_model = torch.nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.train.plateau_factor,
                                                           patience=cfg.train.plateau_patience)
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, dtype)
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)
    tb = TensorBoard(run_dir, enabled=dist_info.is_main)
    monitor = TrainMonitor(device, ("loss",), checkpointer, run_dir if dist_info.is_main else None,
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

    def save(is_best=False):
        monitor.sync()  # never checkpoint diverged weights
        return checkpointer.save(training_state(
            model, optimizer, scheduler, scaler, epoch=epoch, step=step, step_in_epoch=step_in_epoch,
            bad_epochs=bad_epochs, best=best, best_epoch=best_epoch, history=history,
            train_seconds=train_seconds, clips_seen=clips_seen, monitor=monitor.state_dict(), band_mean=band_mean,
            band_std=band_std, model_name=cfg.model.name), step, is_best)

    # ---- the loop
    while epoch < cfg.train.epochs and bad_epochs < cfg.train.early_stop_patience:
        sampler.set_epoch(epoch, start=step_in_epoch * per_rank_batch)
        train_model.train()
        epoch_start = time.time()
        for mels, targets in loader:
            mels, targets = augment_batch(mels, targets, cfg.augment)
            with autocast(device, dtype):
                _, clip_probs = train_model(mels.to(device))
            # BCE on the clip probabilities: the only supervision is the weak (clip) label.
            loss = weak_label_loss(clip_probs, targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            step_in_epoch += 1
            clips_seen += len(mels) * dist_info.world_size
            monitor.add(step, loss=loss)
            if step % cfg.train.log_every_steps == 0:
                tb.log(step, {"loss/train": monitor.interval_means(step)["loss"],
                              "lr": optimizer.param_groups[0]["lr"]})
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                train_seconds += time.time() - epoch_start
                epoch_start = time.time()
                save()
            if any_rank_requested(preemption):
                train_seconds += time.time() - epoch_start
                preemption.exit(save())
        train_seconds += time.time() - epoch_start
        train_loss = monitor.epoch_means(step)["loss"]  # stops here on divergence, before validating NaN weights
        metrics = validate(model, valid_set, device, dtype, cfg.postprocess.tag_threshold)
        monitor.check_finite(step, "validation loss", metrics["valid_loss"])
        scheduler.step(metrics["valid_mAP"])
        is_best = selection_key(metrics) > best
        best, best_epoch = (selection_key(metrics), epoch) if is_best else (best, best_epoch)
        bad_epochs = 0 if is_best else bad_epochs + 1
        metrics = {"train_loss": train_loss, **metrics,
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
                      params=n_params, best_epoch=best_epoch, epochs_trained=epoch,
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
