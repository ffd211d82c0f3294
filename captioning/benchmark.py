"""Speed of the decoder on cached features: training images/s, and decoding images/s for greedy,
batched beam search, our beam search run one image at a time, and the reference: the loop of the
popular tutorial implementation (sgrvinod's caption.py), which decodes a single image per call,
copies the features to every live beam and re-projects them at every step. The ratio of the batched
search to that loop, measured in the same process, is printed last.

    python -m captioning.benchmark --config captioning/configs/resnet101_lstm.yaml [--images 64]
    # the size of the tutorial's comparison: vocabulary 5000, 51 steps
    python -m captioning.benchmark --config captioning/configs/resnet101_lstm.yaml --vocab 5000 decode.max_len=51

Random weights and random features of the config's shape (no data, no pretrained weights needed).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from captioning.config import Config
from captioning.decoding import beam_search, greedy_decode
from captioning.models.attention_lstm import AttentionLSTMDecoder
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


@torch.no_grad()
def tutorial_beam_search(decoder, features: torch.Tensor, beam_size: int, max_len: int, start_id: int,
                         end_id: int) -> list[int]:
    """The reference: caption_image_beam_search of sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning
    (caption.py) on the layers of our AttentionLSTMDecoder, one image (1, P, D) per call. Finished
    hypotheses leave the beam (k shrinks); the features are copied to the k live beams and projected
    by the attention again at every step; the context is an elementwise product and a sum."""
    k, vocab = beam_size, decoder.out.out_features
    attention = decoder.attention
    features = features.expand(k, -1, -1)
    prev_words = torch.full((k,), start_id, dtype=torch.long, device=features.device)
    seqs, seqs_alpha = prev_words.unsqueeze(1), features.new_ones(k, 1, features.size(1))
    top_scores = features.new_zeros(k, 1)
    complete_seqs, complete_scores = [], []
    mean = features.mean(dim=1)
    h, c = torch.tanh(decoder.init_h(mean)), torch.tanh(decoder.init_c(mean))
    for step in range(max_len):
        scores = attention.score(torch.tanh(attention.feature_proj(features)
                                            + attention.hidden_proj(h).unsqueeze(1))).squeeze(2)
        alpha = torch.softmax(scores, dim=1)
        context = torch.sigmoid(decoder.gate(h)) * (features * alpha.unsqueeze(2)).sum(dim=1)
        h, c = decoder.lstm(torch.cat([decoder.embedding(prev_words), context], dim=1), (h, c))
        scores = top_scores + torch.log_softmax(decoder.out(h), dim=1)
        top_scores, top_words = (scores[0] if step == 0 else scores.view(-1)).topk(k)
        parent, next_words = top_words // vocab, top_words % vocab
        seqs = torch.cat([seqs[parent], next_words.unsqueeze(1)], dim=1)
        seqs_alpha = torch.cat([seqs_alpha[parent], alpha[parent].unsqueeze(1)], dim=1)
        complete = next_words == end_id
        complete_seqs.extend(seqs[complete].tolist())
        complete_scores.extend(top_scores[complete].tolist())
        k -= int(complete.sum())
        if k == 0:
            break
        live = parent[~complete]
        seqs, seqs_alpha = seqs[~complete], seqs_alpha[~complete]
        h, c, features = h[live], c[live], features[live]
        top_scores, prev_words = top_scores[~complete].unsqueeze(1), next_words[~complete]
    if not complete_seqs:   # random weights: no hypothesis ended; the tutorial would fail here
        return seqs[top_scores.argmax()].tolist()
    return complete_seqs[max(range(len(complete_scores)), key=complete_scores.__getitem__)]


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=2539, help="vocabulary size (Flickr8k, min count 5: 2539)")
    parser.add_argument("--reference-images", type=int, default=8,
                        help="images decoded by the tutorial's loop (slow: the first --images at most)")
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
    tutorial_comparable = isinstance(decoder, AttentionLSTMDecoder)   # the tutorial's loop is for its LSTM
    if tutorial_comparable:
        reference_images = min(args.reference_images, args.images)
        results[f"beam{beam}_tutorial_loop_images_per_s"] = images_per_s(
            lambda: [tutorial_beam_search(decoder, features[i:i + 1], beam, max_len, SPECIAL["start_id"],
                                          SPECIAL["end_id"]) for i in range(reference_images)],
            reference_images, device)
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
    if tutorial_comparable:
        results[f"beam{beam}_batched_over_tutorial_loop"] = (results[f"beam{beam}_batched_images_per_s"]
                                                           / results[f"beam{beam}_tutorial_loop_images_per_s"])
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
