"""Synthesis decoding speed: B utterances at once (ARModel/NARModel.generate_batch) against one at a time
(generate), AR + NAR, in utterances/s, with random weights at a config's model size on the CPU.

    python -m valle_tts.benchmark --config valle_tts/configs/demo.yaml [--batch 8] [--threads 1] [--repeats 3]
        [key=value ...]

Each utterance has a 3 s prompt (225 frames at 75 Hz) and a 3-5 s target (225-375 new frames, spread
evenly over the utterances); its text is that speech at 15 characters/s (prompt transcript + target
text, as in cross-utterance synthesis). The end token is disabled, so every utterance runs to its length
and both ways do the same work; the AR samples with the config's synth.temperature/top_k/top_p.
The two ways take turns `--repeats` times and each reports its fastest run (other jobs on the machine
only ever slow a run down).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from common.config import cli_main, load_config
from valle_tts.config import Config
from valle_tts.models.valle import VALLE

FRAMES_PER_S, CHARS_PER_S, PROMPT_FRAMES, TEXT_VOCAB = 75, 15, 225, 40


def utterances(count: int, codebooks: int, codebook_size: int, seed: int = 0):
    """(texts, prompt codes (225, Q), new-frame limits) of `count` synthetic utterances."""
    g = torch.Generator().manual_seed(seed)
    texts, prompts, limits = [], [], []
    for i in range(count):
        target_s = 3.0 + 2.0 * i / max(count - 1, 1)
        texts.append(torch.randint(2, TEXT_VOCAB, (round(CHARS_PER_S * (PROMPT_FRAMES / FRAMES_PER_S + target_s)),),
                                   generator=g))
        prompts.append(torch.randint(0, codebook_size, (PROMPT_FRAMES, codebooks), generator=g))
        limits.append(round(FRAMES_PER_S * target_s))
    return texts, prompts, limits


def decode(model: VALLE, texts, prompts, limits, batch: int, synth) -> tuple[float, float]:
    """Every utterance, `batch` at a time (1: the one-utterance generate) -> (AR seconds, NAR seconds)."""
    generator = torch.Generator().manual_seed(0)
    sampling = (synth.temperature, synth.top_k, synth.top_p)
    ar_s = nar_s = 0.0
    for start in range(0, len(texts), batch):
        group = slice(start, start + batch)
        started = time.perf_counter()
        if batch == 1:
            codes1 = [model.ar.generate(texts[start], prompts[start][:, 0], limits[start], *sampling,
                                        generator=generator)[0]]
        else:
            codes1 = [c for c, _ in model.ar.generate_batch(texts[group], [p[:, 0] for p in prompts[group]],
                                                            limits[group], *sampling, generator=generator)]
        middle = time.perf_counter()
        if batch == 1:
            model.nar.generate(texts[start], prompts[start], codes1[0])
        else:
            model.nar.generate_batch(texts[group], prompts[group], codes1)
        ar_s, nar_s = ar_s + middle - started, nar_s + time.perf_counter() - middle
    return ar_s, nar_s


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="valle_tts/configs/demo.yaml", help="its model section sets the size")
    parser.add_argument("--batch", type=int, default=8, help="utterances per batched call (and utterances in all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the fastest counts")
    parser.add_argument("overrides", nargs="*", help="model.*/synth.* settings, e.g. model.num_layers=4")
    args = parser.parse_args(argv)
    cfg = load_config(Config, args.config, args.overrides)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = VALLE(cfg.model, TEXT_VOCAB).eval()
    with torch.no_grad():
        model.ar.head.bias[model.ar.eos] = float("-inf")  # random weights: every utterance runs to its limit
    texts, prompts, limits = utterances(args.batch, cfg.model.num_codebooks, cfg.model.codebook_size)
    decode(model, texts[:2], [p[:20] for p in prompts[:2]], [5, 5], 2, cfg.synth)  # warm-up, not timed
    results = {"config": args.config, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
               "threads": args.threads, "repeats": args.repeats, "utterances": len(texts),
               "new_frames": sum(limits), "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine()}
    ways = {"one_at_a_time": 1, f"batched_{args.batch}": args.batch}
    runs = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, batch in ways.items():
            runs[name].append(decode(model, texts, prompts, limits, batch, cfg.synth))
    for name, timings in runs.items():
        ar_s, nar_s = min(timings, key=sum)
        results[f"{name}_utt_per_s"] = round(len(texts) / (ar_s + nar_s), 3)
        results[f"{name}_ar_s"], results[f"{name}_nar_s"] = round(ar_s, 2), round(nar_s, 2)
    results["speedup"] = round(results[f"batched_{args.batch}_utt_per_s"] / results["one_at_a_time_utt_per_s"], 2)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
