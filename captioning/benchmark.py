"""Speed of the decoder on cached features: training images/s, and decoding images/s for greedy,
batched beam search, and beam search run one image at a time (the loop of the popular tutorial
implementation, sgrvinod's caption.py, which decodes a single image per call).

    python -m captioning.benchmark --config captioning/configs/resnet101_lstm.yaml [--images 64]

Random weights and random features of the config's shape (no data, no pretrained weights needed).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from captioning.config import Config
from captioning.decoding import beam_search, greedy_decode
from captioning.models.captioner import build_model
from common.config import cli_main, load_config
from common.device import pick_device

SPECIAL = dict(start_id=1, end_id=2, pad_id=0, banned_ids=(1, 0))


def images_per_s(fn, count: int, device) -> float:
    fn()   # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=2539, help="vocabulary size (Flickr8k, min count 5: 2539)")
    parser.add_argument("--caption-len", type=int, default=13, help="training caption length with <start>/<end>")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(Config, args.config, args.overrides)
    cfg.encoder.pretrained = False
    device = pick_device(cfg.run.device)
    torch.manual_seed(0)
    model = build_model(cfg.encoder, cfg.decoder, args.vocab).to(device)
    decoder = model.decoder
    positions = cfg.encoder.grid_size ** 2
    features = torch.randn(args.images, positions, model.encoder.out_dim, device=device)
    max_len, beam = cfg.decode.max_len, cfg.decode.beam_size
    batch = cfg.decode.batch_size
    # Random weights rarely emit <end>: every caption runs to max_len, the worst case for all three.
    decoder.eval()

    def batched(fn):
        return lambda: [fn(features[i:i + batch]) for i in range(0, args.images, batch)]

    results = {
        "greedy_images_per_s": images_per_s(batched(
            lambda f: greedy_decode(decoder, f, max_len=max_len, **SPECIAL)), args.images, device),
        f"beam{beam}_batched_images_per_s": images_per_s(batched(
            lambda f: beam_search(decoder, f, beam_size=beam, max_len=max_len, **SPECIAL)), args.images, device),
        f"beam{beam}_one_image_at_a_time_images_per_s": images_per_s(
            lambda: [beam_search(decoder, features[i:i + 1], beam_size=beam, max_len=max_len, **SPECIAL)
                     for i in range(args.images)], args.images, device),
    }
    decoder.train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4)
    captions = torch.randint(4, args.vocab, (cfg.train.batch_size, args.caption_len), device=device)

    def train_steps():
        for i in range(0, args.images, cfg.train.batch_size):
            f = features[i:i + cfg.train.batch_size]
            logits, _ = decoder(f, captions[:len(f), :-1])
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), captions[:len(f), 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    results["train_images_per_s_cached_features"] = images_per_s(train_steps, args.images, device)
    results["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    results["threads"] = torch.get_num_threads()
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
