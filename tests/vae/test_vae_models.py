"""vae/models and vae/figures: shapes for every family and latent size, config errors, figure sizes."""
from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

from common.config import REPO_ROOT, ConfigError, load_config
from common.params import count_parameters
from vae.config import Config
from vae.figures import (
    PAD_PX,
    latent_figure,
    latent_scatter_figure,
    latent_traversal,
    prior_samples_figure,
    reconstruction_figure,
    save_figure,
    tile,
)
from vae.models import ModelConfig, build_model


def tiny(arch: str, latent_dim: int):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, latent_dim=latent_dim, hidden=[16], channels=[4, 8],
                                   convs_per_stage=1, fc_hidden=16), (1, 28, 28))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("latent_dim", [1, 2, 20])
def test_shapes(arch, latent_dim):
    model = tiny(arch, latent_dim)
    images = torch.rand(5, 1, 28, 28)
    logits, mu, logvar = model(images)
    assert logits.shape == (5, 1, 28, 28)
    assert mu.shape == logvar.shape == (5, latent_dim)
    assert model.decode(torch.zeros(3, latent_dim)).shape == (3, 1, 28, 28)


def test_conv_with_one_stage_and_other_image_sizes():
    model = build_model(ModelConfig(arch="conv", latent_dim=3, channels=[6]), (1, 12, 16))
    assert model(torch.rand(2, 1, 12, 16))[0].shape == (2, 1, 12, 16)
    assert build_model(ModelConfig(arch="mlp", latent_dim=3), (1, 12, 16))(torch.rand(2, 1, 12, 16))[0].shape \
        == (2, 1, 12, 16)


def test_model_config_errors():
    with pytest.raises(ConfigError, match="need image sides divisible by 8, got 28x28"):
        build_model(ModelConfig(arch="conv", channels=[8, 16, 32]), (1, 28, 28))
    with pytest.raises(ConfigError, match=r"^model.latent_dim=0 must be >= 1$"):
        load_config(Config, None, ["model.latent_dim=0"])
    with pytest.raises(ConfigError, match=r"^model.hidden\[1\]=0 must be >= 1$"):
        load_config(Config, None, ["model.hidden=[64,0]"])


@pytest.mark.parametrize("latent_dim,columns,rows,layout", [(1, 7, 1, "strip"), (2, 7, 7, "grid"), (12, 7, 10, "rows")])
def test_latent_traversal_layout_and_size(latent_dim, columns, rows, layout):
    model = tiny("mlp", latent_dim)
    images, got_columns, values, got_layout = latent_traversal(model, steps=7, z_max=5.0)
    assert (got_columns, got_layout, images.shape) == (columns, layout, (rows * columns, 1, 28, 28))
    assert values[0] == -5.0 and values[-1] == 5.0
    assert tile(images, columns).shape == (rows * (28 + PAD_PX) + PAD_PX, columns * (28 + PAD_PX) + PAD_PX)
    if layout == "grid":  # top-left cell is (z1, z2) = (-5, +5), bottom-right is (+5, -5)
        z = torch.tensor([[-5.0, 5.0], [5.0, -5.0]])
        expected = torch.sigmoid(model.decode(z))
        assert torch.allclose(images[0], expected[0], atol=1e-6) and torch.allclose(images[-1], expected[1], atol=1e-6)


def test_figures_are_written_as_png(tmp_path):
    model = tiny("conv", 2)
    paths = [save_figure(latent_figure(model, steps=21), tmp_path, "latent_z2"),
             save_figure(reconstruction_figure(model, torch.rand(8, 1, 28, 28)), tmp_path, "reconstructions"),
             save_figure(prior_samples_figure(model, 16, torch.Generator().manual_seed(0)), tmp_path, "prior"),
             save_figure(latent_scatter_figure(np.random.randn(50, 5), np.arange(50) % 10), tmp_path, "scatter"),
             save_figure(latent_scatter_figure(np.random.randn(50, 1), np.arange(50) % 10), tmp_path, "scatter1")]
    for path in paths:
        assert path.parent == tmp_path / "figures" and path.suffix == ".png"
    grid = matplotlib.image.imread(paths[0])
    # the 21 x 21 grid (632 px square) is drawn at least at its own resolution, and square
    assert grid.shape[0] >= 632 and grid.shape[1] >= 632 and abs(grid.shape[0] - grid.shape[1]) < 0.1 * grid.shape[0]
    recon = matplotlib.image.imread(paths[1])
    assert recon.shape[1] > 3 * recon.shape[0]  # two rows of eight: a wide strip


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "vae" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_loads_and_states_its_parameter_count(path):
    cfg = load_config(Config, path)
    text = path.read_text()
    assert text.startswith("# ")
    assert f"{count_parameters(build_model(cfg.model, (1, 28, 28))):,} parameters" in text
