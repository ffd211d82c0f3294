"""Throughput benchmark: training and evaluation tokens/s and peak memory of a config.

    python -m lm.bench --config lm/configs/ptb_lstm_small.yaml [--steps 50] [key.sub=value ...]

Builds the config's data and model, runs a few warm-up updates, then times `--steps` training
updates (forward, backward, clipping, optimizer) and the same number of evaluation chunks.
Peak memory: CUDA max allocated on GPU, the process's peak resident set size on CPU.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from common.config import cli_main, load_config
from common.device import amp_dtype, grad_scaler, pick_device
from common.params import count_parameters
from common.seeding import seed_everything
from lm.config import Config
from lm.data import batchify, bptt_segments, corpus_from_config, eval_chunks
from lm.models import build_model, model_name
from lm.optim import build_optimizer
from lm.perplexity import chunking
from lm.train import train_step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=50, help="timed training updates / eval chunks")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(Config, args.config, args.overrides)
    device = pick_device(cfg.run.device)
    seed_everything(cfg.run.seed)
    amp = amp_dtype(device, cfg.run.amp)
    corpus, _ = corpus_from_config(cfg.data)
    rows = batchify(corpus.train, cfg.train.batch_size)
    model = build_model(cfg.model, len(corpus.vocab)).to(device)
    optimizer = build_optimizer(cfg.train, model)
    scaler = grad_scaler(device, amp)
    segments = bptt_segments(rows.size(1), cfg.train.bptt)
    needed = args.warmup + args.steps
    segments = (segments * (needed // len(segments) + 1))[:needed]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    state, tokens = None, 0
    model.train()
    for i, (start, length) in enumerate(segments):
        if i == args.warmup:
            sync(device)
            started, tokens = time.perf_counter(), 0
        inputs = rows[:, start:start + length].to(device)
        targets = rows[:, start + 1:start + 1 + length].to(device)
        _, _, state = train_step(model, inputs, targets, state, optimizer, scaler, cfg.train.clip, device, amp)
        tokens += inputs.numel()
    sync(device)
    train_tokens_per_s = tokens / (time.perf_counter() - started)

    chunk_len, memory_len = chunking(model, cfg.train.bptt, cfg.eval.context, cfg.eval.stride)
    if hasattr(model, "memory_len"):
        model.memory_len = memory_len
    model.eval()
    state, tokens = None, 0
    chunks = eval_chunks(corpus.valid, cfg.train.eval_batch_size, chunk_len)
    with torch.no_grad():
        for i, (inputs, _, mask) in zip(range(needed), chunks):
            if i == args.warmup:
                sync(device)
                started, tokens = time.perf_counter(), 0
            _, state = model(inputs.to(device), state)
            tokens += int(mask.sum())
    sync(device)
    eval_tokens_per_s = tokens / (time.perf_counter() - started)

    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is KiB on Linux, bytes on macOS
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    result = {"model": model_name(cfg.model), "params": count_parameters(model), "device": str(device),
              "threads": torch.get_num_threads(), "batch_size": cfg.train.batch_size, "bptt": cfg.train.bptt,
              "train_tokens_per_s": round(train_tokens_per_s), "eval_tokens_per_s": round(eval_tokens_per_s),
              "peak_memory_mib": round(peak_mib)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
