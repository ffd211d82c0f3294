"""Two gloo ranks on a tiny VAE run: the run folder is written by rank 0 alone, a 2-rank run
preempted through one rank resumes to exactly the numbers of an uninterrupted 2-rank run, and both
are close to one process. Not equal: the global batch, the fixed binarisation and the data order are
the same, but each rank draws the reparameterisation noise of its half batch from its own RNG."""
import json
import sys

import pytest


def command(root, runs, name, *extra):
    return [sys.executable, "-m", "vae.train", "--config", "vae/configs/demo.yaml", "data.source=mnist",
            f"data.root={root}", "data.pixels=threshold", "model.hidden=[24]", "train.epochs=3",
            "train.batch_size=16", "train.kl_warmup_steps=4", "train.figures_every_epochs=0",
            "train.log_every_steps=4", "eval.iw_samples=4", "run.device=cpu", f"run.root={runs}",
            f"run.name={name}", *extra]


def test_two_ranks_match_one_process_and_resume_after_preemption(mnist_folder, tmp_path, two_rank_preempted_run):
    import subprocess
    root, runs = mnist_folder(), tmp_path / "runs"
    subprocess.run(command(root, runs, "single"), check=True, capture_output=True)
    _, final = two_rank_preempted_run(lambda name, *extra: command(root, runs, name, *extra), runs / "vae")
    assert final["step"] == 3 * 6  # 96 images / 16 per global batch, 3 epochs
    single, straight, ddp = (json.loads((runs / "vae" / name / "summary.json").read_text())["metrics"]
                             for name in ("single", "straight", "ddp"))
    assert ddp == straight
    for name in ("valid_neg_elbo", "valid_bce"):  # the KL term is too small here for a relative check
        assert ddp[name] == pytest.approx(single[name], rel=0.02)
