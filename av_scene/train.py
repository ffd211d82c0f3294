"""Train an audio-visual scene classifier on pre-extracted embeddings (DCASE2021 Task 1B layout).

    python -m av_scene.train --config av_scene/configs/baseline.yaml [key.sub=value ...] [--resume]

Loss: cross-entropy on soft targets (label smoothing and mixup are options); late fusion trains its
two branches on their own losses; the gated model adds auxiliary unimodal losses. Selection and
early stopping on the validation split (held-out recording locations).
"""
from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F

from av_scene.data import SCENE_CLASSES, DataConfig, feature_dims, load_splits
from av_scene.models import MODEL_LABELS, ModelConfig, build_model
from av_scene.predict import headline_metrics, predict, softmax
from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import ConfigError, RunConfig, bounded, cli_main, parse_args
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


@dataclasses.dataclass
class TrainConfig:
    epochs: int = bounded(100, ge=1)
    lr: float = bounded(1e-4, gt=0)
    weight_decay: float = bounded(1e-4, ge=0)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)  # target = (1 - eps) * one-hot + eps / classes
    mixup_alpha: float = bounded(0.0, ge=0)  # > 0: mix clip pairs (both modalities) with lambda ~ Beta(alpha, alpha)
    lr_patience: int = bounded(3, ge=0)  # ReduceLROnPlateau on the validation log loss (0: constant lr)
    lr_factor: float = bounded(0.1, gt=0, lt=1)
    early_stop_patience: int = bounded(7, ge=0)  # stop after this many epochs without a better valid score (0: off)
    select_metric: str = "log_loss"  # log_loss | accuracy: what best.pt and early stopping follow


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(batch,) -> (batch, classes) label-smoothed one-hot targets."""
    return F.one_hot(labels, num_classes).float() * (1 - smoothing) + smoothing / num_classes


def mixup(audio, video, targets, alpha: float):
    """Mix each clip with another of the batch, both modalities and the targets with one lambda.
    Drawn from the global torch RNG in the main process (restored on resume)."""
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(len(targets))
    mix = lambda x: lam * x + (1 - lam) * x[perm]
    return mix(audio), mix(video), mix(targets)


def training_loss(outputs: dict, targets: torch.Tensor, fused_loss: bool, aux_weight: float) -> torch.Tensor:
    """Cross-entropy of the fused logits against soft targets, plus the unimodal branch losses
    (weight 1 for late fusion, which has no fused loss; `aux_weight` otherwise)."""
    ce = lambda logits: -(targets * logits.float().log_softmax(-1)).sum(-1).mean()
    loss = ce(outputs["logits"]) if fused_loss else 0.0
    branch_weight = aux_weight if fused_loss else 1.0
    for key in ("audio_logits", "video_logits"):
        if key in outputs and branch_weight > 0:
            loss = loss + branch_weight * ce(outputs[key])
    return loss


def score(metrics: dict, select_metric: str) -> float:
    """Lower is better."""
    return metrics["log_loss"] if select_metric == "log_loss" else -metrics["accuracy"]


@cli_main
def main(argv=None):
    cfg, args = parse_args(Config, argv, description=__doc__)
    preemption = PreemptionFlag()  # first: a signal during start-up is kept until the first step
    if cfg.train.select_metric not in ("log_loss", "accuracy"):
        raise ConfigError(f"train.select_metric must be log_loss or accuracy, got {cfg.train.select_metric!r}")
    set_cpu_threads(cfg.run.cpu_threads)
    dist_info = setup_distributed(cfg.run.device)
    device = device_for(dist_info, pick_device(cfg.run.device))
    seed_everything(cfg.run.seed + dist_info.rank, cfg.run.deterministic)  # each rank its own noise
    run_dir = prepare_run_dir("av_scene", cfg, device, resume=args.resume is not None,
                              is_main=dist_info.is_main)
    if is_finished(run_dir):
        print(f"{run_dir} already finished; evaluate it with python -m av_scene.evaluate {run_dir}")
        return

    # Data: clips in memory; the epoch's order comes from (seed, epoch) alone.
    with main_rank_first(dist_info):  # rank 0 generates the demo set first, the others read it
        splits = load_splits(cfg.data, cfg.run.seed)
    train_set = splits["train"]
    print(" | ".join(f"{name} {len(ds)} clips" for name, ds in splits.items()))
    per_rank_batch = max(1, cfg.data.batch_size // dist_info.world_size)
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=cfg.run.seed, rank=dist_info.rank,
                               world_size=dist_info.world_size, drop_last=True)
    loader_args = {"num_workers": cfg.data.num_workers, "generator": torch.Generator()}
    train_loader = torch.utils.data.DataLoader(train_set, per_rank_batch, sampler=sampler, drop_last=True,
                                               **loader_args)
    valid_loader = torch.utils.data.DataLoader(splits["valid"], cfg.data.batch_size, **loader_args)

    num_classes = len(SCENE_CLASSES)
    model = build_model(cfg.model, num_classes, *feature_dims(train_set)).to(device)
    num_params = count_parameters(model)
    print(f"model: {MODEL_LABELS[cfg.model.name]}, {num_params:,} parameters")
    train_model = torch.nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=cfg.train.lr_factor, patience=max(cfg.train.lr_patience, 1))
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, dtype)
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)
    tensorboard = TensorBoard(run_dir, enabled=dist_info.is_main)
    monitor = TrainMonitor(device, ("loss",), checkpointer, run_dir if dist_info.is_main else None,
                           fp16_scaler=scaler.is_enabled())

    epoch, step, step_in_epoch, best, stale_epochs, train_seconds = 0, 0, 0, math.inf, 0, 0.0
    best_valid = {}
    state = load_for_resume(checkpointer, args.resume)
    if state is not None:
        counters = restore_training_state(state, model, optimizer, scheduler, scaler)
        epoch, step, step_in_epoch, best, stale_epochs, train_seconds, best_valid = (counters[k] for k in (
            "epoch", "step", "step_in_epoch", "best", "stale_epochs", "train_seconds", "best_valid"))
        monitor.load_state_dict(counters["monitor"])  # this epoch's running train loss
    started, clips_this_launch = time.time(), 0  # the throughput is of this launch (a resume restarts it)

    def save(is_best=False):
        monitor.sync()  # never checkpoint diverged weights
        return checkpointer.save(training_state(
            model, optimizer, scheduler, scaler, epoch=epoch, step=step, step_in_epoch=step_in_epoch,
            best=best, stale_epochs=stale_epochs, best_valid=best_valid, monitor=monitor.state_dict(),
            train_seconds=train_seconds + time.time() - started), step, is_best)

    patience = cfg.train.early_stop_patience
    while epoch < cfg.train.epochs and not (patience and stale_epochs >= patience):
        epoch_start = time.time()
        sampler.set_epoch(epoch, start=step_in_epoch * per_rank_batch)
        train_set.set_epoch(epoch)
        train_model.train()
        for batch in train_loader:
            audio, video = batch["audio"].to(device), batch["video"].to(device)
            targets = soft_targets(batch["label"], num_classes, cfg.train.label_smoothing)
            if cfg.train.mixup_alpha > 0:
                audio, video, targets = mixup(audio, video, targets.to(device), cfg.train.mixup_alpha)
            with autocast(device, dtype):
                outputs = train_model(audio, video)
            loss = training_loss(outputs, targets.to(device), model.fused_loss, cfg.model.aux_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            step_in_epoch += 1
            monitor.add(step, loss=loss)
            clips_this_launch += len(audio) * dist_info.world_size
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                save()
            if any_rank_requested(preemption):
                preemption.exit(save())
        epoch, step_in_epoch = epoch + 1, 0
        train_loss = monitor.epoch_means(step)["loss"]  # stops here on divergence, before validating NaN weights

        # Validation on every rank (the split is small): the same numbers everywhere keep the
        # early-stopping decision in step under DDP.
        outputs = predict(model, valid_loader, device, dtype)
        monitor.check_finite(step, "validation logits", float(outputs["logits"].sum()))
        valid = headline_metrics(outputs["labels"], softmax(outputs["logits"]))
        if cfg.train.lr_patience:
            scheduler.step(valid["log_loss"])
        is_best = score(valid, cfg.train.select_metric) < best
        if is_best:
            best, best_valid, stale_epochs = score(valid, cfg.train.select_metric), {**valid, "epoch": epoch}, 0
        else:
            stale_epochs += 1
        tensorboard.log(epoch, {"loss/train": train_loss, "loss/valid": valid["log_loss"],
                                "accuracy/valid": valid["accuracy"], "lr": optimizer.param_groups[0]["lr"]})
        if dist_info.is_main:
            print(epoch_line(epoch, {"train_loss": train_loss, "valid_log_loss": valid["log_loss"],
                                     "valid_acc": valid["accuracy"], "best": "*" if is_best else ""},
                             time.time() - epoch_start), flush=True)
        save(is_best)
        if any_rank_requested(preemption):
            preemption.exit(checkpointer.step_checkpoints()[-1] if dist_info.is_main else None)

    if dist_info.is_main:
        total_seconds = train_seconds + time.time() - started
        write_summary(run_dir, MODEL_LABELS[cfg.model.name],
                      {"valid_accuracy": best_valid.get("accuracy", float("nan")),
                       "valid_log_loss": best_valid.get("log_loss", float("nan"))},
                      params=num_params, train_seconds=round(total_seconds, 1),
                      train_clips_per_s=round(clips_this_launch / max(time.time() - started, 1e-9), 1),
                      best_epoch=best_valid.get("epoch"), epochs_run=epoch)
        print(f"best epoch {best_valid.get('epoch')}: valid accuracy {best_valid.get('accuracy', 0):.4f}, "
              f"log loss {best_valid.get('log_loss', 0):.4f}; next: python -m av_scene.evaluate {run_dir}")
        mark_finished(run_dir)
    tensorboard.close()
    preemption.finish()  # exit 0 even if a signal arrived after the last step
    del train_model  # before the process group: see common.distributed.cleanup_distributed
    cleanup_distributed()


if __name__ == "__main__":
    main()
