"""The figures of a VAE run: latent traversals (z=1 strip, z=2 grid over [-5, 5]^2, per-dimension
rows for larger latents), originals vs reconstructions, validation latents by digit, prior samples.
Each is a matplotlib figure, saved as PNG in <run>/figures/ and logged to tensorboard."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

PAD_PX = 2
MAX_TRAVERSED_DIMS = 10


def tile(images: torch.Tensor, columns: int) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> one grey image (rows * (H + 2) + 2, columns * (W + 2) + 2)."""
    return make_grid(images.detach().float().cpu(), nrow=columns, padding=PAD_PX, pad_value=1.0)[0].numpy()


@torch.no_grad()
def latent_traversal(model, steps: int, z_max: float) -> tuple[torch.Tensor, int, np.ndarray, str]:
    """Decoded means p(x|z) at evenly spaced z in [-z_max, z_max]: (images (N, 1, H, W), columns,
    z values, layout). latent 1: one strip; latent 2: a steps x steps grid (z1 along x, z2 up along
    y); larger latents: one row per dimension (the first 10), the other dimensions at 0."""
    device = next(model.parameters()).device
    values = torch.linspace(-z_max, z_max, steps, device=device)
    if model.latent_dim == 1:
        z, layout = values[:, None], "strip"
    elif model.latent_dim == 2:
        z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")  # top row is z2 = +z_max
        z, layout = torch.stack([z1.flatten(), z2.flatten()], dim=1), "grid"
    else:
        dims = min(model.latent_dim, MAX_TRAVERSED_DIMS)
        z = torch.zeros(dims, steps, model.latent_dim, device=device)
        for d in range(dims):
            z[d, :, d] = values
        z, layout = z.flatten(0, 1), "rows"
    return torch.sigmoid(model.decode(z)), steps, values.cpu().numpy(), layout


def _image_axes(image: np.ndarray, title: str, scale: float = 0.016):
    height, width = image.shape
    fig, ax = plt.subplots(figsize=(max(3.0, width * scale) + 1.0, max(1.0, height * scale) + 1.0))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    return fig, ax


def _cell_centres(count: int, side_px: int) -> np.ndarray:
    return PAD_PX + np.arange(count) * (side_px + PAD_PX) + side_px / 2


def latent_figure(model, steps: int = 21, z_max: float = 5.0):
    images, columns, values, layout = latent_traversal(model, steps, z_max)
    side = images.shape[-1]
    fig, ax = _image_axes(tile(images, columns), {
        "strip": f"decoded z in [-{z_max:g}, {z_max:g}] (latent size 1)",
        "grid": f"decoded (z1, z2) in [-{z_max:g}, {z_max:g}]^2 (latent size 2)",
        "rows": f"traversal of each latent dimension in [-{z_max:g}, {z_max:g}], others 0"}[layout])
    ticks = range(0, steps, max(1, steps // 10))
    ax.set_xticks(_cell_centres(steps, side)[list(ticks)], [f"{values[i]:g}" for i in ticks])
    ax.set_xlabel("z" if layout == "strip" else "z1" if layout == "grid" else "z_d")
    rows = len(images) // columns
    if layout == "grid":
        ax.set_yticks(_cell_centres(steps, side)[list(ticks)], [f"{values[::-1][i]:g}" for i in ticks])
        ax.set_ylabel("z2")
    elif layout == "rows":
        ax.set_yticks(_cell_centres(rows, side), [f"d={d}" for d in range(rows)])
    else:
        ax.set_yticks([])
    fig.tight_layout()
    return fig


@torch.no_grad()
def reconstruction_figure(model, images: torch.Tensor):
    """Top row: the given images; bottom row: decoded means at the posterior mean."""
    mu, _ = model.encode(images)
    reconstructions = torch.sigmoid(model.decode(mu))
    fig, ax = _image_axes(tile(torch.cat([images, reconstructions]), len(images)),
                          "originals (top) vs reconstructions (bottom)", scale=0.04)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


@torch.no_grad()
def prior_samples_figure(model, count: int = 64, generator: torch.Generator | None = None):
    """Decoded means of z ~ N(0, I) (the Bernoulli means, not binary draws)."""
    device = next(model.parameters()).device
    z = torch.randn(count, model.latent_dim, generator=generator).to(device)
    columns = int(np.ceil(np.sqrt(count)))
    fig, ax = _image_axes(tile(torch.sigmoid(model.decode(z)), columns), "samples from the prior", scale=0.04)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def latent_scatter_figure(mu: np.ndarray, labels: np.ndarray):
    """Validation posterior means coloured by digit: as is for latent 2, against the digit (with
    jitter) for latent 1, the first two principal components for larger latents."""
    fig, ax = plt.subplots(figsize=(7, 6))
    if mu.shape[1] == 1:
        jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(labels))
        points, xlabel, ylabel = np.stack([mu[:, 0], labels + jitter], 1), "z", "digit (jittered)"
    elif mu.shape[1] == 2:
        points, xlabel, ylabel = mu, "z1", "z2"
    else:
        from sklearn.decomposition import PCA
        pca = PCA(n_components=2).fit(mu)
        points = pca.transform(mu)
        explained = pca.explained_variance_ratio_
        xlabel, ylabel = f"PC1 ({explained[0]:.0%} of variance)", f"PC2 ({explained[1]:.0%})"
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5,
                         s=3, alpha=0.6, rasterized=True)
    fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"validation latent means (latent size {mu.shape[1]})")
    fig.tight_layout()
    return fig


def save_figure(fig, run_dir: Path, name: str, tensorboard=None, step: int = 0) -> Path:
    """<run_dir>/figures/<name>.png, and the same figure in tensorboard under figures/<name>."""
    path = Path(run_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    if tensorboard is not None:
        tensorboard.figure(f"figures/{name}", fig, step)
    plt.close(fig)
    return path
