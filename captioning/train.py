"""Train a captioning model: CNN encoder + Show-Attend-Tell (or Transformer) decoder.

    python -m captioning.train --config captioning/configs/resnet101_lstm.yaml [key.sub=value ...]
    python -m captioning.train --config ... --resume          # continue the run where it stopped

Loss (train.method=cross_entropy) = cross-entropy of the next word + alpha_c * doubly stochastic
attention regularisation (every grid position should receive about one unit of attention over the
whole caption). train.method=scst: self-critical sequence training from the cross-entropy model in
train.init_from, CIDEr-D of sampled captions as the reward (the loss is in captioning/scst.py).
Every epoch: dev loss, greedy captions of dev images scored with BLEU-4 and CIDEr; best.pt keeps
the epoch with the best train.select_metric.
"""
from __future__ import annotations

import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from captioning.config import Config
from captioning.data import (
    CaptionDataset,
    ImageDataset,
    build_vocabulary,
    collate_captions,
    encode_captions,
    load_corpus,
    normalize_images,
    tokenize,
)
from captioning.decoding import decode_images
from captioning.features import image_sources
from captioning.metrics import quick_scores
from captioning.models.captioner import build_model
from captioning.scheduled_sampling import plot_schedule, teacher_forcing_prob
from captioning.scst import CiderD, load_cross_entropy_model, self_critical_loss
from common.checkpoint import Checkpointer, load_for_resume, restore_training_state, training_state
from common.config import ConfigError, cli_main, parse_args, to_dict
from common.device import amp_dtype, autocast, grad_scaler, pick_device, set_cpu_threads
from common.distributed import (
    ResumableSampler,
    cleanup_distributed,
    device_for,
    main_rank_first,
    setup_distributed,
)
from common.log import TensorBoard, epoch_line, progress
from common.monitor import TrainMonitor
from common.params import count_parameters
from common.preemption import PreemptionFlag, any_rank_requested
from common.run import is_finished, mark_finished, prepare_run_dir, write_summary
from common.seeding import seed_everything


def caption_loss(logits, targets, alphas, pad_id: int, alpha_c: float):
    """logits (B, T, V), targets (B, T), alphas (B, T, P) -> (total, cross-entropy, attention term).
    The attention term is mean over images of sum_p (1 - sum_t alpha_tp)^2 / P, over real words only."""
    cross_entropy = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=pad_id)
    mask = (targets != pad_id).unsqueeze(2).float()
    attention_sum = (alphas.float() * mask).sum(dim=1)                 # (B, P)
    doubly_stochastic = ((1.0 - attention_sum) ** 2).mean()
    return cross_entropy + alpha_c * doubly_stochastic, cross_entropy, doubly_stochastic


# Tensorboard tags of the per-step values, per training method
TB_TAGS = {"cross_entropy": {"cross_entropy": "loss/train_cross_entropy", "loss": "loss/train_total",
                             "doubly_stochastic": "loss/doubly_stochastic"},
           "scst": {"loss": "loss/scst", "reward": "scst/mean_reward", "baseline": "scst/baseline"}}


def make_loader(dataset, sampler, batch_size, num_workers, collate_fn=collate_captions):
    # Own generator: the DataLoader must not draw from the global RNG (exact resume).
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False,
                                       collate_fn=collate_fn, num_workers=num_workers,
                                       generator=torch.Generator(), persistent_workers=False)


@torch.no_grad()
def validate(model, loader, features_given, device, dtype, pad_id) -> float:
    """Teacher-forced cross-entropy per word on the dev captions."""
    model.eval()
    total, words = 0.0, 0
    for images, captions, _ in loader:
        inputs = images.to(device) if features_given else normalize_images(images.to(device))
        captions = captions.to(device)
        with autocast(device, dtype):
            logits, _ = model(inputs, captions[:, :-1], features_given=features_given)
        targets = captions[:, 1:]
        total += F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=pad_id,
                                 reduction="sum").item()
        words += int((targets != pad_id).sum())
    return total / max(words, 1)


@cli_main
def main(argv=None):
    cfg, args = parse_args(Config, argv, description=__doc__)
    preemption = PreemptionFlag()  # first: a signal during start-up is kept until the first step
    dist_info = setup_distributed(cfg.run.device)
    device = device_for(dist_info, pick_device(cfg.run.device))
    seed_everything(cfg.run.seed + dist_info.rank, cfg.run.deterministic)  # each rank its own noise
    set_cpu_threads(cfg.run.cpu_threads)
    run_dir = prepare_run_dir("captioning", cfg, device, resume=args.resume is not None,
                              is_main=dist_info.is_main)
    if is_finished(run_dir):
        print(f"{run_dir} already finished (evaluate it with python -m captioning.evaluate {run_dir})")
        return
    scst = cfg.train.method == "scst"
    if cfg.decoder.kind == "transformer" and max(cfg.data.max_caption_tokens + 2,
                                                 cfg.train.scst_max_len if scst else 0) > cfg.decoder.max_len:
        raise ConfigError(f"decoder.max_len={cfg.decoder.max_len} is shorter than data.max_caption_tokens + 2 "
                          f"(or train.scst_max_len); raise decoder.max_len or lower the others")
    if cfg.train.init_from and not scst:
        raise ConfigError("train.init_from is SCST's starting point: it needs train.method=scst (to continue a "
                          "cross-entropy run, use --resume)")
    if scst and cfg.train.scst_baseline == "mean" and cfg.train.scst_samples < 2:
        raise ConfigError("train.scst_baseline=mean needs train.scst_samples >= 2 (the mean of the other samples)")
    checkpointer = Checkpointer(run_dir, cfg.run.keep_last, dist_info.is_main)
    state = load_for_resume(checkpointer, args.resume)

    # Data: captions and splits, the vocabulary from the training captions, images or cached features.
    with main_rank_first(dist_info):  # rank 0 generates the demo set first, the others read it
        corpus = load_corpus(cfg.data)
    vocab = build_vocabulary(corpus, cfg.data.min_word_count)
    if dist_info.is_main:
        (run_dir / "vocab.json").write_text(json.dumps(vocab.to_json()))
    captions, lengths, image_index = encode_captions(corpus.splits["train"], corpus.captions, vocab,
                                                     cfg.data.max_caption_tokens)
    print(f"data: {len(corpus.splits['train'])} train images, {len(captions)} captions, vocabulary {len(vocab)}")

    model = build_model(cfg.encoder, cfg.decoder, len(vocab))
    if scst and state is None:  # before the feature cache: the encoder is the cross-entropy run's
        load_cross_entropy_model(cfg.train.init_from, model, vocab)
    with main_rank_first(dist_info):  # rank 0 fills the feature cache of a frozen encoder first
        sources, features_given = image_sources(cfg, corpus, model.encoder, device)
    model = model.to(device)
    params = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"model: {params:,} parameters, {trainable:,} trained "
          f"({cfg.encoder.name} encoder {'frozen' if model.encoder.frozen else 'trained'}, {cfg.decoder.kind})")

    # Cross-entropy: one item per caption. SCST: one item per image, rewarded against all its references.
    train_set = ImageDataset(sources["train"]) if scst else CaptionDataset(sources["train"], captions, lengths,
                                                                          image_index)
    per_rank_batch = cfg.train.batch_size // dist_info.world_size
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=cfg.run.seed,
                               rank=dist_info.rank, world_size=dist_info.world_size)
    loader = make_loader(train_set, sampler, per_rank_batch, cfg.data.num_workers,
                         collate_fn=None if scst else collate_captions)
    # CIDEr-D's document frequencies come from the training references, as in Rennie et al.
    cider = CiderD([[" ".join(tokenize(c)) for c in corpus.captions[n]] for n in corpus.splits["train"]]) \
        if scst else None
    dev_caps, dev_lengths, dev_index = encode_captions(corpus.splits["dev"], corpus.captions, vocab)
    dev_loader = make_loader(CaptionDataset(sources["dev"], dev_caps, dev_lengths, dev_index),
                             None, cfg.train.batch_size, cfg.data.num_workers)
    dev_refs = [corpus.captions[n] for n in corpus.splits["dev"]]
    if dist_info.is_main and cfg.sampling.schedule != "none" and not scst:
        (run_dir / "figures").mkdir(exist_ok=True)
        plot_schedule(cfg.sampling, len(loader), cfg.train.epochs, run_dir / "figures" / "teacher_forcing.png")

    train_model = nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model
    groups = [{"params": [p for p in model.decoder.parameters()], "lr": cfg.train.lr}]
    if not model.encoder.frozen:
        groups.append({"params": [p for p in model.encoder.parameters() if p.requires_grad],
                       "lr": cfg.encoder.lr if cfg.encoder.name != "small_cnn" else cfg.train.lr})
    optimizer = torch.optim.Adam(groups)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(cfg.train.lr_decay_every_epochs, 1),
                                                gamma=cfg.train.lr_decay if cfg.train.lr_decay_every_epochs else 1.0)
    dtype = amp_dtype(device, cfg.run.amp)
    scaler = grad_scaler(device, dtype)
    tb = TensorBoard(run_dir, enabled=dist_info.is_main)
    tb_tags = TB_TAGS[cfg.train.method]
    monitor = TrainMonitor(device, tuple(tb_tags), checkpointer, run_dir if dist_info.is_main else None,
                           fp16_scaler=scaler.is_enabled())

    epoch, step, step_in_epoch, best, train_seconds = 0, 0, 0, -1.0, 0.0
    history = []
    if state is not None:
        counters = restore_training_state(state, model, optimizer, scheduler, scaler)
        epoch, step, step_in_epoch, best, train_seconds, history = (
            counters[k] for k in ("epoch", "step", "step_in_epoch", "best", "train_seconds", "history"))
        monitor.load_state_dict(counters["monitor"])  # this epoch's running train loss
    extra = {"vocab": vocab.to_json(), "config": to_dict(cfg), "params": params}

    def save(is_best=False):
        monitor.sync()  # never checkpoint diverged weights
        return checkpointer.save(training_state(
            model, optimizer, scheduler, scaler, epoch=epoch, step=step, step_in_epoch=step_in_epoch,
            best=best, train_seconds=train_seconds, history=history, monitor=monitor.state_dict(), **extra),
            step, is_best)

    while epoch < cfg.train.epochs:
        sampler.set_epoch(epoch, start=step_in_epoch * per_rank_batch)
        train_model.train()
        started = epoch_started = time.time()  # started: of the time not yet in train_seconds
        images_seen = 0
        p_teacher = teacher_forcing_prob(cfg.sampling, step if cfg.sampling.unit == "step" else epoch)
        for images, *targets in progress(loader, desc=f"epoch {epoch}"):
            inputs = images.to(device) if features_given else normalize_images(images.to(device))
            if scst:  # targets: the images' indices in the training split
                loss, reward, baseline = self_critical_loss(model, train_model, inputs, targets[0], cider, vocab,
                                                            cfg.train, features_given, device, dtype)
                values = {"loss": loss, "reward": reward, "baseline": baseline}
            else:     # targets: captions and their lengths
                p_teacher = teacher_forcing_prob(cfg.sampling, step if cfg.sampling.unit == "step" else epoch)
                caps = targets[0].to(device)
                with autocast(device, dtype):
                    logits, alphas = train_model(inputs, caps[:, :-1], p_teacher, cfg.sampling.draw,
                                                 features_given=features_given)
                loss, cross_entropy, attention_term = caption_loss(logits, caps[:, 1:], alphas, vocab.pad,
                                                                   cfg.train.alpha_c)
                values = {"cross_entropy": cross_entropy, "loss": loss, "doubly_stochastic": attention_term}
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            step_in_epoch += 1
            images_seen += len(images)
            monitor.add(step, **values)
            if step % cfg.train.log_every_steps == 0:
                means = monitor.interval_means(step)
                tb.log(step, {**{tb_tags[name]: value for name, value in means.items()},
                              "lr/decoder": optimizer.param_groups[0]["lr"],
                              **({} if scst else {"sampling/teacher_forcing_prob": p_teacher})})
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0:
                train_seconds += time.time() - started
                started = time.time()
                save()
            if any_rank_requested(preemption):
                train_seconds += time.time() - started
                preemption.exit(save())
        train_seconds += time.time() - started
        epoch_seconds = time.time() - epoch_started  # not reset by mid-epoch checkpoints
        epoch, step_in_epoch = epoch + 1, 0
        epoch_means = monitor.epoch_means(step)  # stops here on divergence
        train_record = ({"train_reward": epoch_means["reward"], "train_baseline": epoch_means["baseline"]} if scst
                        else {"train_loss": epoch_means["cross_entropy"], "teacher_forcing_prob": p_teacher})
        scheduler.step()
        is_best = False
        if dist_info.is_main:  # validation and decoding on rank 0 only; the others wait in save()
            valid_loss = validate(model, dev_loader, features_given, device, dtype, vocab.pad)
            hyps, _ = decode_images(model, sources["dev"], vocab, cfg.decode, device, features_given,
                                    beam_size=1, limit=cfg.train.valid_images)
            scores = quick_scores({i: refs for i, refs in enumerate(dev_refs[:len(hyps)])},
                                  dict(enumerate(hyps)))
            record = {"epoch": epoch, **train_record, "valid_loss": valid_loss,
                      "valid_bleu4": scores["bleu4"], "valid_cider": scores["cider"],
                      "valid_distinct_captions": len(set(hyps)),  # SCST's failure: few, bland captions
                      "train_images_per_s": images_seen / max(epoch_seconds, 1e-9)}
            history.append(record)
            tb.log(step, {"loss/valid_cross_entropy": valid_loss, "valid/bleu4": scores["bleu4"],
                          "valid/cider": scores["cider"], "valid/distinct_captions": len(set(hyps)),
                          **({"scst/mean_reward_epoch": epoch_means["reward"],
                              "scst/baseline_epoch": epoch_means["baseline"]} if scst
                             else {"sampling/teacher_forcing_prob_epoch": p_teacher})})
            print(epoch_line(epoch, {k: v for k, v in record.items() if k != "epoch"}, epoch_seconds)
                  + f" | e.g. {hyps[0]!r}", flush=True)
            metric = scores[cfg.train.select_metric]
            is_best = metric > best
            best = max(best, metric)
        save(is_best)
    if dist_info.is_main:
        write_summary(run_dir, f"{cfg.encoder.name}+{cfg.decoder.kind}{'+scst' if scst else ''}",
                      {f"valid_{cfg.train.select_metric}_greedy": best}, params=params,
                      train_seconds=train_seconds, epochs=epoch, history=history)
        tb.close()
        mark_finished(run_dir)
        print(f"done: best dev {cfg.train.select_metric} {best:.4f}; evaluate with "
              f"python -m captioning.evaluate {run_dir}")
    preemption.finish()  # exit 0 even if a signal arrived after the last step
    del train_model  # before the process group: see common.distributed.cleanup_distributed
    cleanup_distributed()


if __name__ == "__main__":
    main()
