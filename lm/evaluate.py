"""Evaluate a trained language model: exact valid and test perplexity, and a generated sample.

    python -m lm.evaluate runs/lm/demo                      # best.pt (else the latest checkpoint)
    python -m lm.evaluate runs/lm/lstm/checkpoints/step-00001000.pt
    python -m lm.evaluate runs/lm/tf eval.context=512 eval.stride=64 eval.temperature=0.8 eval.top_k=40

Any key of the run's config.yaml can be overridden (eval.*, train.eval_batch_size=1 for one pass
over each file). Writes samples.txt and summary.json (model, valid_ppl, test_ppl, params, train
seconds, epochs) into the run folder; for a generated corpus it prints the best possible perplexity.
"""
from __future__ import annotations

import argparse
import math

import torch

from common.checkpoint import find_checkpoint, load_checkpoint
from common.config import ConfigError, cli_main, load_config
from common.device import amp_dtype, pick_device, set_cpu_threads
from common.params import count_parameters
from common.run import read_summary, write_summary
from lm.config import Config
from lm.data import EOS, Vocab, corpus_from_config
from lm.models import TransformerLM, build_model, model_name
from lm.perplexity import chunking, perplexity, stream_nll
from lm.synthetic import read_source_info


def load_model(cfg: Config, checkpoint: dict, vocab_size: int, device) -> torch.nn.Module:
    """The model with the checkpoint's weights: the NT-ASGD average when averaging had started."""
    model = build_model(cfg.model, vocab_size)
    weights = checkpoint["model"]
    if checkpoint.get("averaged") is not None:  # AveragedModel state: module.* + n_averaged
        weights = {k.removeprefix("module."): v for k, v in checkpoint["averaged"].items()
                   if k.startswith("module.")}
    model.load_state_dict(weights)
    return model.to(device).eval()


@torch.no_grad()
def generate(model, vocab: Vocab, prompt: list[str], num_tokens: int, temperature: float = 1.0,
             top_k: int = 0, context: int = 256, generator: torch.Generator | None = None) -> list[str]:
    """Sample `num_tokens` words after `prompt` (the start of a sentence when empty), one at a
    time, the state carrying the context (a Transformer keeps the last `context` tokens)."""
    device = next(model.parameters()).device
    if isinstance(model, TransformerLM):
        model.memory_len = context - 1
    ids = [vocab.eos] + vocab.encode(prompt)
    logits, state = model(torch.tensor([ids], device=device))
    out = []
    for _ in range(num_tokens):
        scores = logits[0, -1].float() / max(temperature, 1e-6)
        if top_k:
            kth = torch.topk(scores, min(top_k, scores.numel())).values[-1]
            scores = scores.masked_fill(scores < kth, -math.inf)
        next_id = torch.multinomial(torch.softmax(scores, dim=-1).cpu(), 1, generator=generator).item()
        out.append(vocab.words[next_id])
        logits, state = model(torch.tensor([[next_id]], device=device), state)
    return out


def as_lines(words: list[str]) -> str:
    """Generated words as text, one sentence per line as in the corpus: <eos> ends a line."""
    return "\n".join(" ".join(line.split()) for line in " ".join(words).split(EOS)).strip()


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="run folder (runs/lm/<name>) or checkpoint file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value over the run's config.yaml")
    args = parser.parse_args(argv)
    run_dir, checkpoint_path = find_checkpoint(args.path, "lm")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir / 'config.yaml'} not found; give a run folder written by lm.train")
    cfg = load_config(Config, run_dir / "config.yaml", args.overrides)
    set_cpu_threads(cfg.run.cpu_threads)
    device = pick_device(cfg.run.device)
    amp = amp_dtype(device, cfg.run.amp)
    corpus, data_dir = corpus_from_config(cfg.data)
    checkpoint = load_checkpoint(checkpoint_path, map_location=device)
    model = load_model(cfg, checkpoint, len(corpus.vocab), device)
    num_params = count_parameters(model)
    print(f"{checkpoint_path} (epoch {checkpoint.get('epoch')}, step {checkpoint.get('step')}): "
          f"{model_name(cfg.model)}, {num_params:,} parameters")

    chunk_len, memory_len = chunking(model, cfg.train.bptt, cfg.eval.context, cfg.eval.stride)
    how = (f"sliding window of {chunk_len + memory_len} tokens, stride {chunk_len}"
           if isinstance(model, TransformerLM) else f"state carried over chunks of {chunk_len}")
    metrics = {}
    for split in ("valid", "test"):
        nll, count = stream_nll(model, getattr(corpus, split), cfg.train.eval_batch_size, chunk_len,
                                memory_len, device, amp)
        metrics[f"{split}_ppl"] = perplexity(nll, count)
        print(f"{split}: perplexity {metrics[f'{split}_ppl']:.2f} over {count:,} tokens "
              f"({cfg.train.eval_batch_size} parallel streams, {how})")
    source = read_source_info(data_dir)
    if source is not None:
        metrics["optimal_test_ppl"] = source["oracle_test_ppl"]
        print(f"best possible test perplexity (the true source's): {source['oracle_test_ppl']:.2f} "
              f"(entropy rate exp(H) = {source['optimal_ppl']:.2f}); model: {metrics['test_ppl']:.2f}")

    generator = torch.Generator().manual_seed(cfg.run.seed)
    words = generate(model, corpus.vocab, cfg.eval.prompt.split(), cfg.eval.generate_tokens,
                     cfg.eval.temperature, cfg.eval.top_k, chunk_len + memory_len, generator)
    sample = as_lines(cfg.eval.prompt.split() + words)
    (run_dir / "samples.txt").write_text(f"prompt: {cfg.eval.prompt!r} temperature {cfg.eval.temperature} "
                                         f"top_k {cfg.eval.top_k}\n{sample}\n")
    print(f"sample ({run_dir / 'samples.txt'}):\n  " + sample[:300].replace("\n", "\n  "))

    trained = read_summary(run_dir) or {}
    write_summary(run_dir, model=model_name(cfg.model), metrics=metrics, params=num_params,
                  train_seconds=trained.get("train_seconds"), epochs=trained.get("epochs"),
                  steps=trained.get("steps"), checkpoint=str(checkpoint_path.relative_to(run_dir)),
                  evaluation=how, eval_streams=cfg.train.eval_batch_size,
                  oov_rate={k: round(v, 5) for k, v in corpus.oov_rate.items()})


if __name__ == "__main__":
    main()
