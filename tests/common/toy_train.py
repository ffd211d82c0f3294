"""A tiny but complete training program built only from common/ — the loop every project follows.
The resume, preemption and DDP tests drive it in subprocesses."""
from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn as nn

from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import RunConfig, cli_main, parse_args
from common.device import amp_dtype, autocast, grad_scaler, pick_device
from common.distributed import (
    ResumableSampler,
    all_reduce_mean,
    cleanup_distributed,
    device_for,
    setup_distributed,
)
from common.preemption import PreemptionFlag, any_rank_requested
from common.run import is_finished, mark_finished, prepare_run_dir, write_summary
from common.seeding import seed_everything


@dataclasses.dataclass
class ToyConfig:
    epochs: int = 3
    samples: int = 96
    batch_size: int = 8      # global batch, split over ranks
    lr: float = 0.05
    dropout: float = 0.2
    step_sleep_s: float = 0.0  # slows steps so a test can interrupt mid-epoch
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


@cli_main
def main(argv=None):
    cfg, args = parse_args(ToyConfig, argv)
    preemption = PreemptionFlag()  # first thing: a signal during start-up is kept for the first step
    dist_info = setup_distributed(cfg.run.device)
    device = device_for(dist_info, pick_device(cfg.run.device))
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    run_dir = prepare_run_dir("toy", cfg, device, resume=args.resume is not None, is_main=dist_info.is_main)
    if is_finished(run_dir):
        print(f"{run_dir} already finished")
        return
    data_gen = torch.Generator().manual_seed(123)
    inputs = torch.randn(cfg.samples, 4, generator=data_gen)
    noise = 0.1 * torch.randn(cfg.samples, 1, generator=data_gen)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + noise
    dataset = torch.utils.data.TensorDataset(inputs, targets)
    per_rank_batch = cfg.batch_size // dist_info.world_size
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=cfg.run.seed,
                               rank=dist_info.rank, world_size=dist_info.world_size, drop_last=True)
    # Own generator: the DataLoader must not draw from the global RNG (it would break exact resume).
    loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler,
                                         drop_last=True, generator=torch.Generator())
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(cfg.dropout), nn.Linear(16, 1)).to(device)
    train_model = nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, dtype)
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)

    epoch, step, step_in_epoch, best = 0, 0, 0, math.inf
    state = load_for_resume(checkpointer, args.resume)
    if state is not None:
        counters = restore_training_state(state, model, optimizer, scheduler, scaler)
        epoch, step, step_in_epoch, best = (counters[k] for k in ("epoch", "step", "step_in_epoch", "best"))

    def save(is_best=False):
        return checkpointer.save(training_state(model, optimizer, scheduler, scaler, epoch=epoch, step=step,
                                                step_in_epoch=step_in_epoch, best=best), step, is_best)

    losses = []
    while epoch < cfg.epochs:
        sampler.set_epoch(epoch, start=step_in_epoch * per_rank_batch)
        train_model.train()
        for x, y in loader:
            with autocast(device, dtype):
                loss = nn.functional.mse_loss(train_model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            step_in_epoch += 1
            losses.append(all_reduce_mean(loss.item()))
            if dist_info.is_main:
                print(f"step {step} loss {losses[-1]:.6f}", flush=True)
            time.sleep(cfg.step_sleep_s)
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                save()
            if any_rank_requested(preemption):
                preemption.exit(save())
        epoch, step_in_epoch = epoch + 1, 0
        model.eval()
        with torch.no_grad():
            valid = nn.functional.mse_loss(model(inputs.to(device)), targets.to(device)).item()
        is_best = valid < best
        best = min(best, valid)
        save(is_best)
    if dist_info.is_main:
        torch.save(model.state_dict(), run_dir / "final_weights.pt")
        write_summary(run_dir, "toy-mlp", {"valid_mse": best})
        mark_finished(run_dir)
    cleanup_distributed()


if __name__ == "__main__":
    main()
