"""Train a word-level language model.

    python -m lm.train --config lm/configs/lstm.yaml [key.sub=value ...] [--resume]
    cd lm && python train.py --config configs/demo.yaml

config -> data -> model (60M check) -> optimizer/schedule -> resume -> epochs of truncated BPTT
(hidden state carried across chunks, detached) -> per epoch: valid AND test perplexity, tensorboard,
best.pt by valid perplexity, early stopping -> summary.json. The loss is the cross-entropy of the
next word (`train_step` below); perplexity comes from lm/perplexity.py.
"""
from __future__ import annotations

import math
import time

import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import ConfigError, cli_main, parse_args
from common.device import amp_dtype, autocast, grad_scaler, pick_device, set_cpu_threads
from common.distributed import all_reduce_mean, cleanup_distributed, device_for, setup_distributed
from common.log import TensorBoard, epoch_line, progress
from common.monitor import TrainMonitor
from common.params import check_parameter_budget
from common.preemption import PreemptionFlag, any_rank_requested
from common.run import is_finished, mark_finished, prepare_run_dir, write_summary
from common.seeding import seed_everything
from lm.config import Config
from lm.data import batchify, bptt_segments, corpus_from_config
from lm.models import MAX_PARAMETERS, build_model, detach_state, model_name
from lm.optim import build_optimizer, build_scheduler, should_start_averaging
from lm.perplexity import chunking, perplexity, stream_nll


def train_step(model, inputs, targets, state, optimizer, scaler, clip, device, amp):
    """One truncated-BPTT update on (batch, time) inputs/targets; returns (loss, grad norm, state) with
    loss and grad norm as device tensors (reading them here would wait for the GPU every step)."""
    with autocast(device, amp):
        logits, state = model(inputs, state)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else math.inf)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), grad_norm, detach_state(state)


def early_stop_reached(valid_losses: list[float], patience: int) -> bool:
    """No valid loss of the last `patience` epochs beats the best before them (patience 0: never). Also
    the loop's condition, so that a run resumed from its early-stop checkpoint does not train on."""
    return bool(patience) and len(valid_losses) > patience and \
        min(valid_losses[-patience:]) >= min(valid_losses[:-patience])


@cli_main
def main(argv=None):
    cfg, args = parse_args(Config, argv, description=__doc__.splitlines()[0])
    preemption = PreemptionFlag()  # first: a signal during start-up is kept until the first step
    set_cpu_threads(cfg.run.cpu_threads)
    dist_info = setup_distributed(cfg.run.device)
    device = device_for(dist_info, pick_device(cfg.run.device))
    seed_everything(cfg.run.seed + dist_info.rank, cfg.run.deterministic)  # each rank its own noise

    # Data: each rank trains on its own rows of the batchified training stream.
    corpus, _ = corpus_from_config(cfg.data)
    if cfg.train.batch_size % dist_info.world_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the "
                          f"{dist_info.world_size} processes")
    train_rows = batchify(corpus.train, cfg.train.batch_size)[dist_info.rank::dist_info.world_size]

    model = build_model(cfg.model, len(corpus.vocab)).to(device)
    num_params = check_parameter_budget(model, MAX_PARAMETERS, model_name(cfg.model))
    run_dir = prepare_run_dir("lm", cfg, device, resume=args.resume is not None, is_main=dist_info.is_main)
    if is_finished(run_dir):
        print(f"{run_dir} already finished; evaluate it with python -m lm.evaluate {run_dir}")
        return
    train_model = nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model

    steps_per_epoch = len(bptt_segments(train_rows.size(1), cfg.train.bptt))
    optimizer = build_optimizer(cfg.train, model)
    scheduler, schedule_every = build_scheduler(cfg.train, optimizer, cfg.train.epochs * steps_per_epoch)
    amp = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, amp)
    chunk_len, memory_len = chunking(model, cfg.train.bptt, cfg.eval.context, cfg.eval.stride)
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)
    tensorboard = TensorBoard(run_dir, enabled=dist_info.is_main)
    monitor = TrainMonitor(device, ("loss", "grad_norm"), checkpointer, run_dir if dist_info.is_main else None,
                           fp16_scaler=scaler.is_enabled())

    # Counters that a checkpoint restores; `state` is the hidden state carried mid-epoch.
    epoch, step, step_in_epoch, train_seconds = 0, 0, 0, 0.0
    valid_losses, best_valid_ppl, best_test_ppl, averaged, state = [], math.inf, math.inf, None, None
    resumed = load_for_resume(checkpointer, args.resume, map_location=device)
    if resumed is not None:
        counters = restore_training_state(resumed, model, optimizer, scheduler, scaler)
        epoch, step, step_in_epoch, train_seconds, valid_losses, best_valid_ppl, best_test_ppl = (
            counters[k] for k in ("epoch", "step", "step_in_epoch", "train_seconds", "valid_losses",
                                  "best_valid_ppl", "best_test_ppl"))
        state = counters["hidden"]
        monitor.load_state_dict(counters["monitor"])
        if counters["averaged"] is not None:
            averaged = AveragedModel(model)
            averaged.load_state_dict(counters["averaged"])

    def save(is_best=False):
        monitor.sync()  # never checkpoint diverged weights
        return checkpointer.save(training_state(
            model, optimizer, scheduler, scaler, epoch=epoch, step=step, step_in_epoch=step_in_epoch,
            train_seconds=train_seconds, valid_losses=valid_losses, best_valid_ppl=best_valid_ppl,
            best_test_ppl=best_test_ppl, hidden=state, monitor=monitor.state_dict(),
            averaged=averaged.state_dict() if averaged is not None else None), step, is_best)

    def split_ppl(eval_model, stream):
        nll, count = stream_nll(eval_model, stream, cfg.train.eval_batch_size, chunk_len, memory_len,
                                device, amp)
        return perplexity(nll, count)

    budget_s = 60 * cfg.train.max_minutes
    if budget_s and cfg.train.schedule == "cosine" and dist_info.is_main:
        print(f"note: the cosine schedule is sized by train.epochs={cfg.train.epochs} "
              f"({cfg.train.epochs * steps_per_epoch} steps), not by train.max_minutes: if the budget ends "
              f"first, the learning rate has not annealed (lower train.epochs to what fits the budget)")
    out_of_time = bool(budget_s) and train_seconds >= budget_s
    if out_of_time:
        print(f"train.max_minutes={cfg.train.max_minutes} is already spent ({train_seconds / 60:.1f} minutes of "
              f"training, epoch {epoch}, step {step}): nothing to do; raise train.max_minutes to continue")
    while epoch < cfg.train.epochs and not out_of_time \
            and not early_stop_reached(valid_losses, cfg.train.early_stop_patience):
        segments = bptt_segments(train_rows.size(1), cfg.train.bptt, cfg.train.variable_bptt,
                                 cfg.run.seed, epoch)
        train_model.train()
        epoch_tokens = 0
        epoch_started = clock = time.perf_counter()  # clock: start of the time not yet in train_seconds
        for start, length in progress(segments[step_in_epoch:], desc=f"epoch {epoch + 1}"):
            inputs = train_rows[:, start:start + length].to(device)
            targets = train_rows[:, start + 1:start + 1 + length].to(device)
            loss, grad_norm, state = train_step(train_model, inputs, targets, state, optimizer, scaler,
                                                cfg.train.clip, device, amp)
            if schedule_every == "step":
                scheduler.step()
            if averaged is not None:
                averaged.update_parameters(model)
            step, step_in_epoch = step + 1, step_in_epoch + 1
            epoch_tokens += inputs.numel()
            monitor.add(step, loss=loss, grad_norm=grad_norm)
            if cfg.train.log_every_steps and step % cfg.train.log_every_steps == 0:
                means = monitor.interval_means(step)
                tensorboard.log(step, {"step/train_loss": means["loss"], "step/grad_norm": means["grad_norm"]})
            elapsed = train_seconds + time.perf_counter() - clock
            out_of_time = bool(budget_s) and elapsed > budget_s
            if dist_info.enabled:  # every rank stops at the same step (clocks differ a little)
                out_of_time = all_reduce_mean(float(out_of_time)) > 0
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                train_seconds, clock = elapsed, time.perf_counter()
                save()
            if any_rank_requested(preemption):
                train_seconds = elapsed
                preemption.exit(save())
            if out_of_time:
                print(f"train.max_minutes={cfg.train.max_minutes} reached after {step} steps")
                break
        epoch_seconds = time.perf_counter() - epoch_started
        train_seconds += time.perf_counter() - clock
        # A budget stop mid-epoch is a partial epoch: it is evaluated (the run needs numbers) and its
        # checkpoint keeps the position and hidden state, so `--resume train.max_minutes=<more>`
        # continues it exactly; the epoch schedule, NT-ASGD and early stopping see whole epochs only.
        partial = step_in_epoch < len(segments)
        if not partial:
            epoch, step_in_epoch, state = epoch + 1, 0, None

        # End of epoch: valid and test perplexity (the averaged weights once NT-ASGD has started).
        eval_model = averaged.module if averaged is not None else model
        epoch_means = monitor.epoch_means(step)  # stops here on divergence, before evaluating NaN weights
        train_loss = epoch_means["loss"]
        valid_ppl, test_ppl = split_ppl(eval_model, corpus.valid), split_ppl(eval_model, corpus.test)
        if not partial:
            valid_losses.append(math.log(valid_ppl))
        is_best = valid_ppl < best_valid_ppl
        if is_best:
            best_valid_ppl, best_test_ppl = valid_ppl, test_ppl
        lr = optimizer.param_groups[0]["lr"]
        tokens_per_s = all_reduce_mean(epoch_tokens / epoch_seconds) * dist_info.world_size
        tensorboard.log(epoch, {
            "loss/train": train_loss, "loss/valid": math.log(valid_ppl), "loss/test": math.log(test_ppl),
            "ppl/train": math.exp(train_loss), "ppl/valid": valid_ppl, "ppl/test": test_ppl,
            "lr": lr, "grad_norm": epoch_means["grad_norm"], "tokens_per_s": tokens_per_s})
        if dist_info.is_main:
            shown_epoch = round(epoch + step_in_epoch / len(segments), 3) if partial else epoch  # a fraction if partial
            print(epoch_line(shown_epoch, {"train_ppl": math.exp(train_loss), "valid_ppl": valid_ppl,
                                           "test_ppl": test_ppl, "lr": lr, "tok/s": round(tokens_per_s)},
                             epoch_seconds), flush=True)
        if partial:
            save(is_best)
            break
        if schedule_every == "epoch":
            scheduler.step(math.log(valid_ppl))
        if cfg.train.optimizer == "ntasgd" and averaged is None \
                and should_start_averaging(valid_losses, cfg.train.nonmono):
            print(f"NT-ASGD: valid loss stopped improving; averaging weights from step {step}")
            averaged = AveragedModel(model)
        save(is_best)
        if early_stop_reached(valid_losses, cfg.train.early_stop_patience):
            print(f"early stop: valid perplexity has not improved for {cfg.train.early_stop_patience} epochs")

    # stopped by the budget before train.epochs: not FINISHED, so a larger budget can continue it
    status = "budget" if out_of_time and epoch < cfg.train.epochs else "finished"
    if dist_info.is_main:
        write_summary(run_dir, model=model_name(cfg.model), status=status,
                      metrics={"valid_ppl": best_valid_ppl, "test_ppl": best_test_ppl}, params=num_params,
                      train_seconds=round(train_seconds, 1),
                      epochs=round(epoch + step_in_epoch / steps_per_epoch, 3),
                      steps=step, oov_rate={k: round(v, 5) for k, v in corpus.oov_rate.items()},
                      evaluated_by="train.py (best epoch); lm.evaluate rewrites this")
        if status == "finished":
            mark_finished(run_dir)
        print(f"best valid ppl {best_valid_ppl:.2f} (test {best_test_ppl:.2f}); "
              f"evaluate with: python -m lm.evaluate {run_dir}")
    tensorboard.close()
    preemption.finish()  # exit 0 even if a signal arrived after the last step
    del train_model  # before the process group: see common.distributed.cleanup_distributed
    cleanup_distributed()


if __name__ == "__main__":
    main()
