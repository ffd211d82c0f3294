"""Evaluate a VAE run: per-image metrics on the validation (and test) images, figures, summary.json.

    python -m vae.evaluate runs/vae/mlp_z2                      # best.pt (else the latest checkpoint)
    python -m vae.evaluate runs/vae/mlp_z2/checkpoints/step-00004690.pt eval.iw_samples=1000

Metrics, in nats per image except mse (all averaged over the images):
  bce       reconstruction error -log p(x|z), z ~ q(z|x): binary cross-entropy summed over the pixels
  kl        KL(q(z|x) || N(0, I)), closed form
  neg_elbo  bce + kl, an upper bound on -log p(x)
  mse       squared error of the same reconstruction's pixel means, summed over the pixels
  nll       importance-weighted estimate of -log p(x) with eval.iw_samples samples (IWAE bound)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import find_checkpoint, load_checkpoint
from common.config import ConfigError, cli_main, load_config
from common.device import pick_device, set_cpu_threads
from common.log import TensorBoard
from common.params import count_parameters
from common.run import read_summary, write_summary
from vae.config import Config
from vae.data import Split, batches, load_splits
from vae.loss import bernoulli_nll, gaussian_kl, importance_weighted_nll, log_importance_weights
from vae.models import build_model


@torch.no_grad()
def evaluate_split(model, split, batch_size: int, seed: int) -> dict:
    """Mean per-image bce, kl, neg_elbo and mse over `split`, with the posterior samples drawn from a
    generator seeded by `seed` (the same noise at every call, so epochs compare like for like)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=split.images.device).manual_seed(seed)
    totals = {"bce": 0.0, "kl": 0.0, "mse": 0.0}
    for images, _ in batches(split, batch_size):
        logits, mu, logvar = model(images, generator)
        totals["bce"] += bernoulli_nll(logits, images).sum().item()
        totals["kl"] += gaussian_kl(mu, logvar).sum().item()
        totals["mse"] += (torch.sigmoid(logits.float()) - images).pow(2).sum().item()
    metrics = {name: total / len(split) for name, total in totals.items()}
    metrics["neg_elbo"] = metrics["bce"] + metrics["kl"]
    model.train(was_training)
    return metrics


@torch.no_grad()
def mean_importance_weighted_nll(model, split, num_samples: int, seed: int, batch_size: int = 100) -> float:
    """The k-sample importance-weighted estimate of -log p(x) averaged over the images of `split`."""
    model.eval()
    generator = torch.Generator(device=split.images.device).manual_seed(seed)
    total = 0.0
    for images, _ in batches(split, batch_size):
        total += importance_weighted_nll(log_importance_weights(model, images, num_samples, generator)).sum().item()
    return total / len(split)


@torch.no_grad()
def posterior_means(model, split, batch_size: int) -> np.ndarray:
    """mu of q(z|x) for every image of `split`: (N, latent_dim)."""
    model.eval()
    return torch.cat([model.encode(images)[0].float().cpu() for images, _ in batches(split, batch_size)]).numpy()


def write_figures(model, cfg: Config, valid, run_dir: Path, tensorboard=None, step: int = 0,
                  scatter: bool = True) -> list[Path]:
    """The latent traversal, reconstructions of the first 16 validation images, prior samples and
    (scatter=True) the latent scatter by digit, as PNG files and tensorboard figures."""
    # heavy (matplotlib, torchvision): only for figures, not at training start-up
    from vae.figures import (
        latent_figure,
        latent_scatter_figure,
        prior_samples_figure,
        reconstruction_figure,
        save_figure,
    )
    model.eval()
    paths = [save_figure(latent_figure(model, cfg.eval.traversal_steps, cfg.eval.z_max), run_dir,
                         f"latent_z{model.latent_dim}", tensorboard, step),
             save_figure(reconstruction_figure(model, valid.images[:16]), run_dir, "reconstructions",
                         tensorboard, step),
             save_figure(prior_samples_figure(model, 64, torch.Generator().manual_seed(cfg.eval.seed)),
                         run_dir, "prior_samples", tensorboard, step)]
    if scatter:
        mu = posterior_means(model, valid, cfg.eval.batch_size)
        paths.append(save_figure(latent_scatter_figure(mu, valid.labels.cpu().numpy()), run_dir,
                                 "latent_scatter", tensorboard, step))
    return paths



def report_lines(name: str, results: dict, k: int) -> list[str]:
    lines = [f"# {name}", "", "nats per image (MSE: squared error summed over the pixels)", "",
             f"| split | BCE | KL | -ELBO | MSE | NLL (k={k}) | images |", "|---|---|---|---|---|---|---|"]
    for split, m in results.items():
        nll = "-"
        if "nll" in m:
            nll = f"{m['nll']:.2f}"
            if "nll_images_neg_elbo" in m:
                nll += f" (first {m['nll_images']} images, whose -ELBO is {m['nll_images_neg_elbo']:.2f})"
        lines.append(f"| {split} | {m['bce']:.2f} | {m['kl']:.2f} | {m['neg_elbo']:.2f} | {m['mse']:.2f} "
                     f"| {nll} | {m['images']} |")
    return lines


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a VAE run folder or checkpoint")
    parser.add_argument("path", help="run folder (runs/vae/<name>) or a checkpoint file")
    parser.add_argument("overrides", nargs="*", help="key=value over the run's config (e.g. eval.iw_samples=1000)")
    args = parser.parse_args(argv)
    run_dir, checkpoint_path = find_checkpoint(args.path, "vae")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; give a run folder written by python -m vae.train")
    cfg = load_config(Config, run_dir / "config.yaml", args.overrides)
    set_cpu_threads(cfg.run.cpu_threads)
    device = pick_device(cfg.run.device)
    splits = {name: split.to(device) for name, split in load_splits(cfg.data).items() if name != "train"}
    state = load_checkpoint(checkpoint_path, map_location=device)
    model = build_model(cfg.model, tuple(splits["valid"].images.shape[1:])).to(device)
    model.load_state_dict(state["model"])
    print(f"evaluating {checkpoint_path} (epoch {state.get('epoch')}, step {state.get('step')})")

    results = {}
    for name, split in splits.items():
        start = time.time()
        metrics = evaluate_split(model, split, cfg.eval.batch_size, cfg.eval.seed)
        metrics["images_per_s"] = len(split) / (time.time() - start)
        if cfg.eval.iw_samples > 0:
            count = min(len(split), cfg.eval.iw_images or len(split))
            subset = Split(split.images[:count], split.labels[:count])
            start = time.time()
            metrics["nll"] = mean_importance_weighted_nll(model, subset, cfg.eval.iw_samples, cfg.eval.seed)
            metrics["nll_seconds"] = time.time() - start
            metrics["nll_images"] = count
            if count < len(split):  # the -ELBO of the same images, to compare the two bounds
                metrics["nll_images_neg_elbo"] = evaluate_split(model, subset, cfg.eval.batch_size,
                                                                cfg.eval.seed)["neg_elbo"]
        metrics["images"] = len(split)
        results[name] = metrics
        print(f"{name}: " + " | ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))

    tensorboard = TensorBoard(run_dir)
    figures = write_figures(model, cfg, splits["valid"], run_dir, tensorboard, step=state.get("epoch", 0))
    tensorboard.close()
    print("figures: " + ", ".join(str(p) for p in figures))

    model_name = f"vae-{cfg.model.arch}-z{cfg.model.latent_dim}"
    (run_dir / "eval.json").write_text(json.dumps({"checkpoint": str(checkpoint_path), "metrics": results},
                                                  indent=2) + "\n")
    (run_dir / "report.md").write_text("\n".join(report_lines(model_name, results, cfg.eval.iw_samples)) + "\n")
    headline = {f"{split}_{key}": float(value) for split, m in results.items()
                for key, value in m.items() if key in ("bce", "kl", "neg_elbo", "mse", "nll")}
    headline["eval_images_per_s"] = float(results["valid"]["images_per_s"])
    train_info = (read_summary(run_dir) or {}).get("train", {})
    write_summary(run_dir, model=model_name, metrics=headline, params=count_parameters(model),
                  train=train_info, checkpoint=str(checkpoint_path), best_epoch=state.get("epoch"),
                  iw_samples=cfg.eval.iw_samples, pixels=cfg.data.pixels, split=cfg.data.split)
    print(f"{model_name}: " + ", ".join(f"{k} {v:.4g}" for k, v in headline.items()))


if __name__ == "__main__":
    main()
