"""Train VALL-E's AR and NAR stages on cuts with stored EnCodec codes.

    python -m valle_tts.train --config valle_tts/configs/demo.yaml run.name=demo
    python -m valle_tts.train --config valle_tts/configs/base_100h.yaml --resume

Unfinished data-preparation stages run first (prepare.py; each stage skips when done).
Losses: cross-entropy of the AR on codebook 1 (+ end token) and of the NAR on one codebook
j in 2..Q per batch (drawn at random), on target frames only; logged with top-10 accuracy.
"""
from __future__ import annotations

import json
import math
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import ConfigError, cli_main, parse_args, resolve_path
from common.device import amp_dtype, autocast, grad_scaler, pick_device, set_cpu_threads
from common.distributed import all_reduce_mean, cleanup_distributed, device_for, setup_distributed
from common.log import TensorBoard, epoch_line, progress
from common.monitor import TrainMonitor
from common.params import check_parameter_budget
from common.preemption import PreemptionFlag, any_rank_requested
from common.run import is_finished, mark_finished, prepare_run_dir
from common.seeding import seed_everything
from valle_tts.config import PARAM_LIMIT, Config
from valle_tts.data import CodesDataset, load_cuts, make_loader, make_sampler
from valle_tts.models.valle import VALLE
from valle_tts.prepare import run_stages
from valle_tts.stability import run_frames_per_token
from valle_tts.text import TokenTable


def top10_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction of valid targets within the 10 highest logits, number of valid targets), as device
    tensors: reading them would wait for the GPU."""
    valid = targets != -100
    top = logits.topk(10, dim=-1).indices
    hits = (top == targets.unsqueeze(-1)).any(-1) & valid
    count = valid.sum()
    return hits.sum() / count.clamp(min=1), count


def nar_prompt_lens(audio_lens: torch.Tensor, frac_range: list[float]) -> torch.Tensor:
    """Random prompt length per utterance (a prefix of it), drawn from the global RNG."""
    low, high = frac_range
    frac = low + (high - low) * torch.rand(audio_lens.shape)
    return torch.minimum(torch.clamp((audio_lens.float() * frac).long(), min=1), audio_lens - 1)


def while_every_rank_has_one(loader, distributed: bool):
    """The loader's batches, stopping every DDP rank as soon as one rank has run out (lhotse's
    duration-based batches can leave the ranks with unequal counts; a lone rank would hang)."""
    batches = iter(loader)
    while True:
        batch = next(batches, None)
        if distributed:
            if all_reduce_mean(0.0 if batch is None else 1.0) < 1.0:
                return
        elif batch is None:
            return
        yield batch


def compute_losses(model, batch: dict, stage: int, prompt_lens: torch.Tensor, which: str, device):
    """{"ar": (loss, top10, count), "nar": ...} for one batch (losses are means over target tokens)."""
    to = lambda k: batch[k].to(device, non_blocking=True)
    out = model(to("text"), to("text_lens"), to("codes"), to("audio_lens"), prompt_lens.to(device), stage, which)
    results = {}
    for name, (logits, targets) in out.items():
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100)
        acc, count = top10_accuracy(logits.detach(), targets)
        results[name] = (loss, acc, count)
    return results


@torch.no_grad()
def validate(model, loader, cfg: Config, device, dtype) -> dict:
    """Deterministic validation: prompt = the first third of each utterance; the NAR is scored on
    every codebook 2..Q of every batch."""
    model.eval()
    Q = cfg.model.num_codebooks
    passes = ([("ar", 1)] if cfg.train.models in ("ar", "both") else []) + \
        ([("nar", stage) for stage in range(1, Q)] if cfg.train.models in ("nar", "both") else [])
    # every key exists on every rank (even one without batches), so the all-reduce below matches
    sums = {f"{which}_{kind}": [0.0, 0] for which, stage in passes
            for kind in ("loss", f"top10_cb{1 if which == 'ar' else stage + 1}")}
    for batch in loader:
        prompt_lens = torch.minimum(torch.clamp(batch["audio_lens"] // 3, min=1), batch["audio_lens"] - 1)
        for which, stage in passes:
            with autocast(device, dtype):
                loss, acc, count = compute_losses(model, batch, stage, prompt_lens, which, device)[which]
            cb = 1 if which == "ar" else stage + 1
            count = count.item()
            for key, value in ((f"{which}_loss", loss.item()), (f"{which}_top10_cb{cb}", acc.item())):
                sums[key][0] += value * count
                sums[key][1] += count
    model.train()
    # ratio of the means over ranks = ratio of the sums: a count-weighted mean over all ranks
    metrics = {k: all_reduce_mean(s) / max(1e-9, all_reduce_mean(n)) for k, (s, n) in sorted(sums.items())}
    metrics["loss"] = sum(v for k, v in metrics.items() if k.endswith("_loss"))
    return metrics


@cli_main
def main(argv=None):
    cfg, args = parse_args(Config, argv)
    preemption = PreemptionFlag()  # first: a signal during start-up is kept until the first step
    set_cpu_threads(cfg.run.cpu_threads)
    dist_info = setup_distributed(cfg.run.device)
    device = device_for(dist_info, pick_device(cfg.run.device))
    seed_everything(cfg.run.seed + dist_info.rank, cfg.run.deterministic)  # each rank its own noise
    run_dir = prepare_run_dir("valle_tts", cfg, device, resume=args.resume is not None, is_main=dist_info.is_main)
    if is_finished(run_dir):
        print(f"{run_dir} already finished")
        return

    # Data: prepare what is missing (main rank), then cuts with codes and the token table.
    if dist_info.is_main:
        run_stages(cfg.data, cfg.codec, device)
    if dist_info.enabled:
        torch.distributed.barrier()
    manifest_dir = resolve_path(cfg.data.manifest_dir)
    codec_record = json.loads((manifest_dir / "codec.json").read_text())
    if not codec_record["pretrained"]:
        print("NOTE: training on codes of a RANDOMLY INITIALISED EnCodec (codec.pretrained=false)")
    tokens = TokenTable.load(manifest_dir / "tokens.txt")
    if dist_info.is_main:  # the run keeps its own copy: synthesis must use the table it was trained with
        tokens.save(run_dir / "tokens.txt")
        run_frames_per_token(run_dir, cfg, tokens)  # the expected lengths of synthesis (stability.py)
    dataset = CodesDataset(tokens)
    train_cuts = load_cuts(manifest_dir, cfg.data.train_parts, cfg.data.train_hours)
    train_sampler = make_sampler(train_cuts, cfg.data, shuffle=True,
                                 seed=cfg.run.seed, rank=dist_info.rank, world_size=dist_info.world_size)
    valid_sampler = make_sampler(load_cuts(manifest_dir, cfg.data.valid_parts), cfg.data, shuffle=False,
                                 seed=0, rank=dist_info.rank, world_size=dist_info.world_size)

    # Model: both stages always exist, so the 500M budget covers AR + NAR together.
    with torch.device("meta"):  # count first, allocate only a model within the budget
        num_params = check_parameter_budget(VALLE(cfg.model, len(tokens)), PARAM_LIMIT, "VALL-E AR + NAR")
    model = VALLE(cfg.model, len(tokens)).to(device)
    # find_unused_parameters: each step uses one NAR output layer of seven (and maybe one stage only)
    train_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) \
        if dist_info.enabled else model
    trained = [p for name, p in model.named_parameters() if cfg.train.models in ("both", name.split(".")[0])]
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr, betas=(0.9, 0.95))
    warmup = max(1, cfg.train.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, math.sqrt(warmup / (s + 1))))
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, dtype)
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)
    tb = TensorBoard(run_dir, enabled=dist_info.is_main)
    trained_stages = ("ar", "nar") if cfg.train.models == "both" else (cfg.train.models,)
    monitor = TrainMonitor(device, ("loss",) + tuple(f"{which}_{kind}" for which in trained_stages
                                                       for kind in ("loss", "top10")),
                           checkpointer, run_dir if dist_info.is_main else None, fp16_scaler=scaler.is_enabled())

    epoch, step, batches_in_epoch, best, train_seconds = 0, 0, 0, math.inf, 0.0
    state = load_for_resume(checkpointer, args.resume)
    if state is not None:
        counters = restore_training_state(state, model, optimizer, scheduler, scaler)
        epoch, step, batches_in_epoch, best, train_seconds = (
            counters[k] for k in ("epoch", "step", "batches_in_epoch", "best", "train_seconds"))
        monitor.load_state_dict(counters["monitor"])

    def save(is_best=False, **extra):
        monitor.sync()  # never checkpoint diverged weights
        return checkpointer.save(training_state(model, optimizer, scheduler, scaler, epoch=epoch, step=step,
                                                batches_in_epoch=batches_in_epoch, best=best,
                                                monitor=monitor.state_dict(),
                                                train_seconds=train_seconds, num_params=num_params, **extra),
                                 step, is_best)

    Q = cfg.model.num_codebooks
    done = lambda: cfg.train.max_steps and step >= cfg.train.max_steps
    frames_this_launch, launch_seconds = 0, 0.0  # throughput of this launch (a resume restarts it)
    model.train()
    while epoch < cfg.train.epochs and not done():
        start = time.time()
        loader = make_loader(train_sampler, dataset, epoch, batches_in_epoch, cfg.data.num_workers)
        preempted = False
        optimizer.zero_grad(set_to_none=True)  # an epoch's leftover partial accumulation is dropped
        for batch in progress(while_every_rank_has_one(loader, dist_info.enabled),
                              desc=f"epoch {epoch}", enabled=dist_info.is_main):
            if batch["codes"].shape[-1] != Q:
                raise ConfigError(f"stored codes have {batch['codes'].shape[-1]} codebooks but "
                                  f"model.num_codebooks={Q}; make them match")
            # NAR codebook index for this batch: the same on every rank, reproducible on resume
            stage = random.Random(cfg.run.seed * 1_000_003 + epoch * 10_007 + batches_in_epoch).randrange(1, Q)
            prompt_lens = nar_prompt_lens(batch["audio_lens"], cfg.train.nar_prompt_frac)
            with autocast(device, dtype):
                results = compute_losses(train_model, batch, stage, prompt_lens, cfg.train.models, device)
            loss = sum(r[0] for r in results.values())
            scaler.scale(loss / cfg.train.grad_accum).backward()
            batches_in_epoch += 1
            frames_this_launch += int(batch["audio_lens"].sum()) * dist_info.world_size
            monitor.add(step, loss=loss, **{f"{name}_{kind}": value for name, (part_loss, acc, _) in results.items()
                                            for kind, value in (("loss", part_loss), ("top10", acc))})
            if batches_in_epoch % cfg.train.grad_accum:
                continue
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(trained, cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if step % cfg.train.log_every_steps == 0:  # every rank joins the all-reduce
                means = monitor.interval_means(step)
                tb.log(step, {f"train/{k}": v for k, v in means.items()} | {"train/lr": scheduler.get_last_lr()[0]})
                if dist_info.is_main:
                    print(f"step {step} " + " ".join(f"{k} {v:.4f}" for k, v in means.items()), flush=True)
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                save()
            preempted = any_rank_requested(preemption)
            if preempted or done():
                break
        train_seconds += time.time() - start
        launch_seconds += time.time() - start
        if preempted:
            preemption.exit(save())
        if not done():
            epoch, batches_in_epoch = epoch + 1, 0
        monitor.epoch_means(step)  # stops here on divergence, before validating NaN weights
        valid = validate(train_model, make_loader(valid_sampler, dataset, 0, 0, cfg.data.num_workers),
                         cfg, device, dtype)
        is_best = valid["loss"] < best
        best = min(best, valid["loss"])
        tb.log(epoch, {f"valid/{k}": v for k, v in valid.items()})
        if dist_info.is_main:
            print(epoch_line(epoch, {f"valid_{k}": v for k, v in valid.items()}, time.time() - start), flush=True)
        save(is_best, valid=valid)
        if is_best and dist_info.is_main:
            (run_dir / "train_log.json").write_text(json.dumps(
                {"best_epoch": epoch, "valid": valid, "params": num_params, "steps": step}, indent=2) + "\n")
    if dist_info.is_main:
        log = json.loads((run_dir / "train_log.json").read_text())
        log["train_seconds"] = train_seconds
        log["train_frames_per_s"] = round(frames_this_launch / max(launch_seconds, 1e-9), 1)
        (run_dir / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
        if epoch < cfg.train.epochs:  # train.max_steps came first: a budget, so the run can go on
            print(f"stopped at train.max_steps={cfg.train.max_steps} (epoch {epoch}, step {step}): not marked "
                  f"FINISHED; --resume train.max_steps=<more, or 0> continues it", flush=True)
        else:
            mark_finished(run_dir)
    tb.close()
    preemption.finish()  # exit 0 even if a signal arrived after the last step
    del train_model  # before the process group: see common.distributed.cleanup_distributed
    cleanup_distributed()
    return run_dir


if __name__ == "__main__":
    main()
