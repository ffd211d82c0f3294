"""Train a variational auto-encoder on MNIST (or scikit-learn's digits for the demo).

    python -m vae.train --config vae/configs/mlp_z2.yaml
    python -m vae.train --config vae/configs/conv_z2.yaml train.epochs=5 run.name=quick
    python -m vae.train --config vae/configs/conv_z2.yaml --resume       # continue the run folder
    cd vae && python train.py --config configs/demo.yaml

Loss per image (vae/loss.py): BCE summed over the pixels + kl_weight * KL(q(z|x) || N(0, I)).
Each epoch ends with the validation metrics, tensorboard figures and a checkpoint; best.pt is the
epoch with the lowest validation reconstruction error (train.select_by). Then run vae/evaluate.py.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import cli_main, parse_args, to_dict
from common.device import amp_dtype, autocast, grad_scaler, pick_device, set_cpu_threads
from common.distributed import ResumableSampler, cleanup_distributed, device_for, setup_distributed
from common.log import TensorBoard, epoch_line
from common.monitor import TrainMonitor
from common.params import count_parameters
from common.preemption import PreemptionFlag, any_rank_requested
from common.run import is_finished, mark_finished, prepare_run_dir, write_summary
from common.seeding import seed_everything
from vae.config import Config
from vae.data import batches, draw_pixels, load_splits
from vae.evaluate import evaluate_split, write_figures
from vae.loss import kl_weight, training_loss
from vae.models import build_model


def lr_lambda(schedule: str, total_steps: int):
    """Multiplier of the base learning rate at each step: constant, or a cosine decay to 0."""
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


@cli_main
def main(argv=None):
    cfg, args = parse_args(Config, argv, description="Train a VAE on MNIST")
    preemption = PreemptionFlag()  # first: a signal during start-up is kept until the first step
    set_cpu_threads(cfg.run.cpu_threads)
    dist_info = setup_distributed(cfg.run.device)
    device = device_for(dist_info, pick_device(cfg.run.device))
    seed_everything(cfg.run.seed + dist_info.rank, cfg.run.deterministic)  # each rank its own noise

    # --- data: every split as one tensor on the device; the order comes from the sampler ---
    splits = {name: split.to(device) for name, split in load_splits(cfg.data).items()}
    train_split, valid_split = splits["train"], splits["valid"]
    print(f"data: {cfg.data.source}, " + ", ".join(f"{n} {len(s):,}" for n, s in splits.items())
          + f" images, pixels={cfg.data.pixels}")
    run_dir = prepare_run_dir("vae", cfg, device, resume=args.resume is not None, is_main=dist_info.is_main)
    if is_finished(run_dir):
        print(f"{run_dir} already finished; evaluate it with python -m vae.evaluate {run_dir}")
        return
    per_rank_batch = max(1, cfg.train.batch_size // dist_info.world_size)
    sampler = ResumableSampler(len(train_split), shuffle=True, seed=cfg.run.seed,
                               rank=dist_info.rank, world_size=dist_info.world_size)
    steps_per_epoch = math.ceil(len(sampler) / per_rank_batch)

    # --- model, optimizer, schedule, mixed precision ---
    model = build_model(cfg.model, tuple(train_split.images.shape[1:])).to(device)
    num_params = count_parameters(model)
    print(f"model: vae-{cfg.model.arch}-z{cfg.model.latent_dim}, {num_params:,} parameters")
    train_model = nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.train.schedule, cfg.train.epochs * steps_per_epoch))
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, dtype)
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)
    monitor = TrainMonitor(device, ("bce", "kl", "loss"), checkpointer, run_dir if dist_info.is_main else None,
                           fp16_scaler=scaler.is_enabled())

    # --- resume: weights, optimizer, RNG states and the position in the epoch ---
    epoch, step, step_in_epoch, best, train_seconds, train_images = 0, 0, 0, math.inf, 0.0, 0
    best_valid = {}  # the validation numbers of best.pt's epoch: what summary.json reports
    state = load_for_resume(checkpointer, args.resume, map_location=device)
    if state is not None:
        counters = restore_training_state(state, model, optimizer, scheduler, scaler)
        epoch, step, step_in_epoch, best, train_seconds, train_images = (counters[k] for k in (
            "epoch", "step", "step_in_epoch", "best", "train_seconds", "train_images"))
        best_valid = counters.get("best_valid", {})  # absent from checkpoints written before 2026-12-03
        monitor.load_state_dict(counters["monitor"])
    tensorboard = TensorBoard(run_dir, enabled=dist_info.is_main)

    def save(is_best=False):
        monitor.sync()  # never checkpoint diverged weights
        return checkpointer.save(training_state(
            model, optimizer, scheduler, scaler, epoch=epoch, step=step, step_in_epoch=step_in_epoch,
            best=best, best_valid=best_valid, train_seconds=train_seconds, train_images=train_images,
            monitor=monitor.state_dict(), config=to_dict(cfg)),
            step, is_best)

    while epoch < cfg.train.epochs:
        sampler.set_epoch(epoch, start=step_in_epoch * per_rank_batch)
        model.train()
        epoch_start = clock = time.time()  # clock: start of the time not yet in train_seconds
        for images, _ in batches(train_split, per_rank_batch, sampler):
            inputs = draw_pixels(images, cfg.data.pixels)
            weight = kl_weight(step, cfg.train.beta, cfg.train.kl_warmup_steps)
            with autocast(device, dtype):
                logits, mu, logvar = train_model(inputs)
            loss, bce, kl = training_loss(logits, inputs, mu, logvar, weight, cfg.train.free_bits)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            step_in_epoch += 1
            train_images += len(inputs) * dist_info.world_size
            monitor.add(step, bce=bce.mean(), kl=kl.mean(), loss=loss)
            if step % cfg.train.log_every_steps == 0:
                means = monitor.interval_means(step)
                tensorboard.log(step, {"train/bce": means["bce"], "train/kl": means["kl"],
                                       "train/neg_elbo": means["bce"] + means["kl"], "train/loss": means["loss"],
                                       "train/kl_weight": weight, "train/lr": scheduler.get_last_lr()[0]})
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                train_seconds += time.time() - clock
                clock = time.time()
                save()
            if any_rank_requested(preemption):
                train_seconds += time.time() - clock
                preemption.exit(save())
        train_seconds += time.time() - clock
        epoch, step_in_epoch = epoch + 1, 0
        monitor.epoch_means(step)  # stops here on divergence, before evaluating NaN weights

        # --- validation, figures, checkpoint ---
        valid = evaluate_split(model, valid_split, cfg.eval.batch_size, cfg.eval.seed)
        is_best = valid[cfg.train.select_by] < best
        if is_best:
            best, best_valid = valid[cfg.train.select_by], {**valid, "epoch": epoch}
        tensorboard.log(epoch, {f"valid/{name}": value for name, value in valid.items()})
        if dist_info.is_main and cfg.train.figures_every_epochs \
                and epoch % cfg.train.figures_every_epochs == 0:
            write_figures(model, cfg, valid_split, run_dir, tensorboard, step=epoch, scatter=False)
        print(epoch_line(epoch, {"step": step, **{f"valid_{k}": v for k, v in valid.items()},
                                 "best": "*" if is_best else "",
                                 "train_img/s": round(train_images / max(train_seconds, 1e-9))},
                         time.time() - epoch_start), flush=True)
        saved = save(is_best)
        if any_rank_requested(preemption):
            preemption.exit(saved)

    if dist_info.is_main:
        write_summary(run_dir, model=f"vae-{cfg.model.arch}-z{cfg.model.latent_dim}",
                      metrics={f"valid_{k}": float(v) for k, v in best_valid.items() if k != "epoch"},
                      best_epoch=best_valid.get("epoch"), params=num_params,
                      train={"seconds": train_seconds, "images_per_s": train_images / max(train_seconds, 1e-9),
                             "epochs": epoch, "steps": step, "device": str(device)})
        mark_finished(run_dir)
        print(f"done: {run_dir}; evaluate with python -m vae.evaluate {run_dir}")
    tensorboard.close()
    preemption.finish()  # exit 0 even if a signal arrived after the last step
    del train_model  # before the process group: see common.distributed.cleanup_distributed
    cleanup_distributed()


if __name__ == "__main__":
    main()
