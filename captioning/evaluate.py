"""Evaluate a captioning run: decode dev/test with beam search, score with pycocoevalcap, write
the per-image scores, the best and worst examples per metric, attention-map figures and summary.json.

    python -m captioning.evaluate runs/captioning/<name> [decode.beam_size=3 evaluate.examples=10 ...]
    python -m captioning.evaluate runs/captioning/<name>/checkpoints/step-00001234.pt

Outputs in the run folder: captions_<split>.json, scores_<split>.csv, examples_<split>.txt,
metrics.json, figures/attention_<image>.png, summary.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from captioning.config import Config  # noqa: E402
from captioning.data import Vocabulary, load_corpus, load_image  # noqa: E402
from captioning.decoding import decode_images  # noqa: E402
from captioning.features import image_sources  # noqa: E402
from captioning.metrics import METRICS, human_ceiling, score_captions  # noqa: E402
from captioning.models.captioner import build_model  # noqa: E402
from common.checkpoint import find_checkpoint, load_checkpoint  # noqa: E402
from common.config import ConfigError, cli_main, load_config  # noqa: E402
from common.device import pick_device, set_cpu_threads  # noqa: E402
from common.run import read_summary, write_summary  # noqa: E402


def write_examples(path: Path, scores, names, hyps, refs, count: int) -> str:
    """The `count` best and worst images per metric with their caption and references."""
    lines = []
    for metric, per_image in scores.per_image.items():
        order = sorted(range(len(names)), key=lambda i: per_image[names[i]])
        for title, picked in (("best", order[::-1][:count]), ("worst", order[:count])):
            lines.append(f"== {metric}: {count} {title} ==")
            for i in picked:
                lines.append(f"{per_image[names[i]]:.3f}  {names[i]}  model: {hyps[i]}")
                lines += [f"         ref: {r}" for r in refs[i]]
        lines.append("")
    text = "\n".join(lines)
    path.write_text(text + "\n")
    return text


def attention_figure(image: np.ndarray, words: list[str], alphas: torch.Tensor, grid: int, path: Path):
    """The image once per generated word, with that word's attention map (grid x grid) over it."""
    steps = len(words)
    cols = min(6, steps + 1)
    rows = -(-(steps + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=9)
    height, width = image.shape[:2]
    for t, word in enumerate(words):
        ax = axes.flat[t + 1]
        ax.imshow(image)
        ax.imshow(alphas[t].view(grid, grid).numpy(), cmap="gray", alpha=0.6,
                  extent=(0, width, height, 0), interpolation="bilinear")
        ax.set_title(word, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="run folder or checkpoint file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (decode.*, evaluate.*, data.root ...)")
    args = parser.parse_args(argv)
    run_dir, ckpt_path = find_checkpoint(args.path, "captioning")
    cfg = load_config(Config, run_dir / "config.yaml", args.overrides)
    device = pick_device(cfg.run.device)
    set_cpu_threads(cfg.run.cpu_threads)
    state = load_checkpoint(ckpt_path, map_location=device)
    vocab = Vocabulary(state["vocab"])
    model = build_model(cfg.encoder, cfg.decoder, len(vocab))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    print(f"evaluating {ckpt_path} (epoch {state['epoch']}, step {state['step']}) with beam "
          f"{cfg.decode.beam_size}, length penalty {cfg.decode.length_penalty}")
    corpus = load_corpus(cfg.data)
    sources, features_given = image_sources(cfg, corpus, model.encoder, device)
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)

    results, timing, distinct = {}, {}, {}
    for split in cfg.evaluate.splits:
        if split not in corpus.splits:
            raise ConfigError(f"evaluate.splits: unknown split {split!r}; use dev and/or test")
        names = corpus.splits[split]
        refs = [corpus.captions[n] for n in names]
        started = time.time()
        hyps, alphas = decode_images(model, sources[split], vocab, cfg.decode, device, features_given)
        timing[f"{split}_decode_images_per_s"] = len(names) / (time.time() - started)
        # few distinct captions is the known failure of CIDEr optimisation (bland, repeated captions)
        distinct[f"{'valid' if split == 'dev' else split}_distinct_captions"] = len(set(hyps))
        scores = score_captions(dict(zip(names, refs)), dict(zip(names, hyps)),
                                meteor=cfg.evaluate.meteor, spice=cfg.evaluate.spice)
        results[split] = scores
        (run_dir / f"captions_{split}.json").write_text(json.dumps(
            [{"image": n, "caption": h, "references": r} for n, h, r in zip(names, hyps, refs)], indent=1))
        with open(run_dir / f"scores_{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            metrics = list(scores.per_image)
            writer.writerow(["image", "caption", *metrics])
            for n, h in zip(names, hyps):
                writer.writerow([n, h, *(f"{scores.per_image[m][n]:.4f}" for m in metrics)])
        examples = write_examples(run_dir / f"examples_{split}.txt", scores, names, hyps, refs,
                                  cfg.evaluate.examples)
        print(f"\n{split}: " + ", ".join(f"{m} {v:.4f}" for m, v in scores.corpus.items())
              + f"; {len(set(hyps))} distinct captions for {len(names)} images")
        if split == cfg.evaluate.splits[0]:
            for metric, reason in scores.unavailable.items():
                if metric != "SPIDEr":  # SPIDEr needs SPICE: one line for both
                    print(f"{metric}{' and SPIDEr' if metric == 'SPICE' else ''} unavailable: {reason}")
        if split == "test" or split == cfg.evaluate.splits[-1]:
            print(f"\nbest and worst {split} examples per metric (all in {run_dir}/examples_{split}.txt):")
            print(examples)
            for i in range(min(cfg.evaluate.attention_figures, len(names))):
                image_path = corpus.images_dir / names[i]
                if image_path.is_file():
                    image = load_image(image_path, cfg.data.image_size).permute(1, 2, 0).numpy()
                    words = hyps[i].split() + ["<end>"]
                    attention_figure(image, words[:len(alphas[i])], alphas[i], cfg.encoder.grid_size,
                                     figures / f"attention_{Path(names[i]).stem}.png")

    ceiling = {}
    if cfg.evaluate.human_ceiling and "test" in corpus.splits:
        test_refs = {n: corpus.captions[n] for n in corpus.splits["test"]}
        ceiling = human_ceiling(test_refs, meteor=cfg.evaluate.meteor)
        print("\nhuman ceiling on test (each caption against the other references): "
              + ", ".join(f"{m} {v:.4f}" for m, v in ceiling.items()))

    table = ["| metric | " + " | ".join(results) + (" | human (test, leave-one-out) |" if ceiling else " |"),
             "|---|" + "---|" * (len(results) + bool(ceiling))]
    for metric in METRICS:
        cells = [f"{results[s].corpus[metric]:.4f}" if metric in results[s].corpus else "n/a" for s in results]
        if ceiling:
            cells.append(f"{ceiling[metric]:.4f}" if metric in ceiling else "n/a")
        table.append(f"| {metric} | " + " | ".join(cells) + " |")
    print("\n" + "\n".join(table))
    (run_dir / "metrics.json").write_text(json.dumps({
        "checkpoint": str(ckpt_path), "decode": vars(cfg.decode),
        **{s: r.corpus for s, r in results.items()},
        "unavailable": next(iter(results.values())).unavailable if results else {},
        "human_ceiling_test": ceiling, **timing, **distinct}, indent=2))

    headline = {f"{'valid' if s == 'dev' else s}_{m.lower().replace('-', '')}": v
                for s, r in results.items() for m, v in r.corpus.items()}
    previous = read_summary(run_dir) or {}
    model_name = f"{cfg.encoder.name}+{cfg.decoder.kind}{'+scst' if cfg.train.method == 'scst' else ''}"
    write_summary(run_dir, model_name, headline,
                  params=state.get("params"), train_seconds=previous.get("train_seconds"),
                  epochs=state["epoch"], beam_size=cfg.decode.beam_size, **timing, **distinct,
                  unavailable=next(iter(results.values())).unavailable if results else {},
                  human_ceiling_test=ceiling, history=previous.get("history", state.get("history")))
    print(f"\nwrote {run_dir}/summary.json, metrics.json, captions/scores/examples per split, figures/")


if __name__ == "__main__":
    main()
