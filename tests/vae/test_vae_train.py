"""vae/train.py and vae/evaluate.py end to end on tiny generated MNIST files: outputs, exact resume
after a preemption mid-epoch, and one-line errors for user mistakes."""
from __future__ import annotations

import json
import sys

import pytest
import torch

import vae.train
from common.checkpoint import load_checkpoint
from common.config import REPO_ROOT
from common.preemption import EXIT_PREEMPTED
from vae import evaluate, train


def tiny_args(root, run_root, name, *extra):
    return ["data.root=" + str(root), "data.pixels=dynamic", "model.arch=mlp", "model.latent_dim=2",
            "model.hidden=[24]", "train.epochs=2", "train.batch_size=16", "train.kl_warmup_steps=4",
            "train.figures_every_epochs=0", "eval.iw_samples=4", "eval.traversal_steps=5",
            f"run.root={run_root}", f"run.name={name}", *extra]


def final_state(run_dir):
    return load_checkpoint(sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1])


def test_train_then_evaluate_writes_checkpoints_figures_and_summary(mnist_folder, tmp_path):
    root = mnist_folder()
    train.main(tiny_args(root, tmp_path / "runs", "e2e", "model.arch=conv", "model.channels=[4,8]",
                         "model.fc_hidden=16", "train.figures_every_epochs=2", "data.split=holdout",
                         "data.holdout_size=16"))
    run_dir = tmp_path / "runs" / "vae" / "e2e"
    assert (run_dir / "FINISHED").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "figures" / "latent_z2.png").is_file()  # written during training too
    assert json.loads((run_dir / "summary.json").read_text())["train"]["steps"] == 2 * 5  # 80 images / 16
    evaluate.main([str(run_dir)])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "vae-conv-z2" and summary["params"] > 0 and summary["train"]["seconds"] > 0
    metrics = summary["metrics"]
    for split in ("valid", "test"):
        assert metrics[f"{split}_neg_elbo"] == pytest.approx(metrics[f"{split}_bce"] + metrics[f"{split}_kl"])
        # the importance-weighted NLL is a tighter bound than the -ELBO (up to sampling noise)
        assert 0 < metrics[f"{split}_nll"] < metrics[f"{split}_neg_elbo"] + 0.5 and metrics[f"{split}_mse"] > 0
    for name in ("latent_z2", "reconstructions", "prior_samples", "latent_scatter"):
        assert (run_dir / "figures" / f"{name}.png").is_file()
    assert "| valid |" in (run_dir / "report.md").read_text()
    evaluate.main([str(run_dir), "eval.iw_images=8"])  # the NLL on a subset comes with that subset's -ELBO
    valid = json.loads((run_dir / "eval.json").read_text())["metrics"]["valid"]
    assert valid["nll_images"] == 8 and valid["nll"] < valid["nll_images_neg_elbo"] + 0.5
    assert list((run_dir / "tb").glob("events.*"))


def test_resume_after_preemption_mid_epoch_is_exact(mnist_folder, tmp_path, monkeypatch):
    root, runs = mnist_folder(), tmp_path / "runs"
    train.main(tiny_args(root, runs, "straight"))
    straight = final_state(runs / "vae" / "straight")

    # a preemption signal seen at step 3 of 6 in the first epoch: checkpoint, then exit 75
    calls = {"n": 0}

    def signal_at_step_3(flag, device=None):
        calls["n"] += 1
        return calls["n"] == 3
    monkeypatch.setattr(vae.train, "any_rank_requested", signal_at_step_3)
    with pytest.raises(SystemExit) as stopped:
        train.main(tiny_args(root, runs, "preempted"))
    assert stopped.value.code == EXIT_PREEMPTED
    checkpoint = final_state(runs / "vae" / "preempted")
    assert (checkpoint["epoch"], checkpoint["step"], checkpoint["step_in_epoch"]) == (0, 3, 3)
    monkeypatch.setattr(vae.train, "any_rank_requested", lambda flag, device=None: False)
    train.main(tiny_args(root, runs, "preempted") + ["--resume"])
    resumed = final_state(runs / "vae" / "preempted")
    assert resumed["step"] == straight["step"] == 12
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert resumed["best"] == straight["best"]
    assert json.loads((runs / "vae" / "preempted" / "summary.json").read_text())["metrics"] == \
        json.loads((runs / "vae" / "straight" / "summary.json").read_text())["metrics"]

    # a finished run is left alone by a requeued job; a fresh run never overwrites checkpoints
    train.main(tiny_args(root, runs, "preempted") + ["--resume"])
    assert final_state(runs / "vae" / "preempted")["step"] == 12


@pytest.mark.parametrize("args,message", [
    (["train.epoch=3"], "unknown config key train.epoch; did you mean train.epochs?"),
    (["model.arch=transformer"], "model.arch: expected one of ['mlp', 'conv'], got 'transformer'"),
    (["train.batch_size=0"], "train.batch_size=0 must be >= 1"),
    (["data.root=/nonexistent/mnist"], "MNIST file train-images-idx3-ubyte[.gz] not found in /nonexistent/mnist"),
])
def test_user_mistakes_are_one_line(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        train.main(["--config", str(REPO_ROOT / "vae/configs/mlp_z2.yaml"), "data.download=false",
                    f"run.root={tmp_path}", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_fresh_run_refuses_a_folder_with_checkpoints_and_evaluate_needs_one(mnist_folder, tmp_path, capsys):
    root, runs = mnist_folder(), tmp_path / "runs"
    train.main(tiny_args(root, runs, "once", "train.epochs=1"))
    with pytest.raises(SystemExit):
        train.main(tiny_args(root, runs, "once", "train.epochs=1"))
    assert "already has checkpoints; pass --resume" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / "empty")])
    assert "no checkpoint in" in capsys.readouterr().err


def test_divergence_stops_with_one_line_and_exit_3(mnist_folder, tmp_path, expect_divergence):
    runs = tmp_path / "runs"
    expect_divergence(lambda: train.main(tiny_args(mnist_folder(), runs, "diverged", "train.lr=1e6")),
                      runs / "vae" / "diverged")


def test_kill_9_at_a_random_step_then_resume_is_exact(mnist_folder, tmp_path, kill_9_and_resume):
    root, runs = mnist_folder(), tmp_path / "runs"
    kill_9_and_resume(lambda name, *extra: [sys.executable, "-m", "vae.train", *tiny_args(root, runs, name, *extra)],
                      runs / "vae", seed=2)


def test_configs_with_a_kl_warm_up_choose_best_by_neg_elbo():
    """During the warm-up the KL weight is below 1, so an early epoch can have the lowest BCE while its
    -ELBO is poor: a config that warms the KL up must not pick best.pt by BCE."""
    from common.config import load_config
    from vae.config import Config
    configs = sorted((REPO_ROOT / "vae" / "configs").glob("*.yaml"))
    warming = [path for path in configs if load_config(Config, path).train.kl_warmup_steps > 0]
    assert warming, "no config warms the KL up any more: drop this test"
    for path in warming:
        assert load_config(Config, path).train.select_by == "neg_elbo", path.name


def test_preempted_after_the_last_epoch_checkpoint_resumes_to_a_finished_run(mnist_folder, tmp_path, monkeypatch):
    # The Slurm warning can land after the last epoch's checkpoint, before summary.json and FINISHED:
    # the requeued job then resumes with no epoch left to run and must still write them.
    root, runs = mnist_folder(), tmp_path / "runs"
    checks = {"n": 0}

    def count_checks(flag, device=None):
        checks["n"] += 1
        return False
    monkeypatch.setattr(vae.train, "any_rank_requested", count_checks)
    train.main(tiny_args(root, runs, "straight"))
    last_check, calls = checks["n"], {"n": 0}

    def signal_at_the_last_check(flag, device=None):
        calls["n"] += 1
        return calls["n"] == last_check
    monkeypatch.setattr(vae.train, "any_rank_requested", signal_at_the_last_check)
    with pytest.raises(SystemExit) as stopped:
        train.main(tiny_args(root, runs, "late"))
    assert stopped.value.code == EXIT_PREEMPTED and final_state(runs / "vae" / "late")["epoch"] == 2
    assert not (runs / "vae" / "late" / "FINISHED").exists()
    monkeypatch.setattr(vae.train, "any_rank_requested", lambda flag, device=None: False)
    train.main(tiny_args(root, runs, "late") + ["--resume"])
    assert (runs / "vae" / "late" / "FINISHED").is_file()
    summaries = [json.loads((runs / "vae" / name / "summary.json").read_text()) for name in ("straight", "late")]
    assert summaries[0]["metrics"] == summaries[1]["metrics"]
    assert summaries[1]["train"]["epochs"] == 2 and summaries[1]["train"]["steps"] == 12
