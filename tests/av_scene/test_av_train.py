import json
import sys

import pytest
import torch

from av_scene import evaluate, train
from common.checkpoint import Checkpointer
from common.config import REPO_ROOT

DEMO = str(REPO_ROOT / "av_scene" / "configs" / "demo.yaml")


def argv(root, runs, name, *extra):
    """The demo config shrunk to the small set: 16-d embeddings, ~5 steps per epoch."""
    return ["--config", DEMO, f"data.root={root}", "data.synthetic=false", "data.num_frames=8",
            "data.batch_size=16", "data.valid_fraction=0.25", "model.hidden=16", "model.embed=8",
            "train.epochs=3", "train.early_stop_patience=0", f"run.root={runs}", f"run.name={name}", *extra]


def final_weights(run_dir):
    return torch.load(Checkpointer(run_dir).step_checkpoints()[-1], weights_only=False)["model"]


def test_resume_mid_epoch_is_exact(small_root, tmp_path):
    """Train straight vs train, lose everything after a mid-epoch checkpoint, --resume: same weights.
    Mixup, label smoothing, random crops and dropout all draw random numbers on the way."""
    options = ("train.mixup_alpha=0.4", "train.label_smoothing=0.1", "train.lr_patience=1",
               "run.checkpoint_every_steps=2", "run.keep_last=50")
    train.main(argv(small_root, tmp_path, "straight", *options))
    train.main(argv(small_root, tmp_path, "resumed", *options))
    resumed = tmp_path / "av_scene" / "resumed"
    steps = Checkpointer(resumed).step_checkpoints()
    middle = next(p for p in steps if torch.load(p, weights_only=False)["step_in_epoch"] > 0
                  and torch.load(p, weights_only=False)["epoch"] == 1)
    for later in steps[steps.index(middle) + 1:]:
        later.unlink()
    (resumed / "FINISHED").unlink()
    train.main(argv(small_root, tmp_path, "resumed", *options) + ["--resume"])
    straight_weights, resumed_weights = final_weights(tmp_path / "av_scene" / "straight"), final_weights(resumed)
    for key, value in straight_weights.items():
        assert torch.equal(value, resumed_weights[key]), key
    summaries = [json.loads((tmp_path / "av_scene" / n / "summary.json").read_text())["metrics"]
                 for n in ("straight", "resumed")]
    assert summaries[0] == summaries[1]


def test_train_and_evaluate_write_the_reports(small_root, tmp_path, capsys):
    train.main(argv(small_root, tmp_path, "gated", "train.epochs=2"))
    run_dir = tmp_path / "av_scene" / "gated"
    with pytest.raises(SystemExit) as stopped:  # evaluate takes config overrides, run.device included
        evaluate.main([str(run_dir), "run.device=cuda:7"])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and err.startswith("error: run.device=cuda:7") and len(err.splitlines()) == 1
    evaluate.main([str(run_dir), "data.batch_size=7", "run.device=cpu"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "attention pooling + gated fusion"
    assert {"test_accuracy", "test_log_loss", "test_log_loss_calibrated", "valid_log_loss"} <= set(summary["metrics"])
    assert summary["params"] > 0 and summary["train_seconds"] > 0
    out = run_dir / "evaluation"
    assert (out / "confusion_test.png").stat().st_size > 0
    assert "model's own audio and video heads" in (out / "conflict_analysis.md").read_text()
    assert "## Class-wise (test, calibrated)" in (out / "report.md").read_text()
    assert len((out / "predictions_test.csv").read_text().splitlines()) == 1 + 10 * 2 * 3


def test_late_fusion_reports_every_rule_and_baseline_uses_unimodal_runs(small_root, tmp_path):
    for name in ("late", "audio", "video", "intermediate"):
        train.main(argv(small_root, tmp_path, name, f"model.name={name}", "train.epochs=1"))
    runs = tmp_path / "av_scene"
    evaluate.main([str(runs / "late")])
    report = (runs / "late" / "evaluation" / "report.md").read_text()
    assert "| average (headline) |" in report and "| weighted |" in report and "| stacking |" in report
    evaluate.main([str(runs / "intermediate"), "--audio-run", str(runs / "audio"), "--video-run", str(runs / "video")])
    assert "separately trained runs" in (runs / "intermediate" / "evaluation" / "conflict_analysis.md").read_text()


def test_user_mistakes_are_one_line_errors(small_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv(small_root, tmp_path, "typo", "model.hiden=3"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "error: unknown config key model.hiden; did you mean model.hidden?"
    with pytest.raises(SystemExit):
        train.main(argv(tmp_path / "nowhere", tmp_path, "nodata"))
    assert "fold file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / "no_such_run")])
    assert "neither a run folder nor a checkpoint" in capsys.readouterr().err


def test_preemption_checkpoints_and_resume_finishes_identically(small_root, tmp_path, monkeypatch):
    """A signal in the middle of epoch 2: checkpoint, exit 75; --resume ends where a straight run ends."""
    from common.preemption import EXIT_PREEMPTED, PreemptionFlag

    class SignalAfterSevenSteps(PreemptionFlag):
        checks = 0

        @property
        def requested(self):
            SignalAfterSevenSteps.checks += 1
            return SignalAfterSevenSteps.checks == 7

        @requested.setter
        def requested(self, value):
            pass

    train.main(argv(small_root, tmp_path, "straight"))
    monkeypatch.setattr(train, "PreemptionFlag", SignalAfterSevenSteps)
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv(small_root, tmp_path, "preempted"))
    assert exit_info.value.code == EXIT_PREEMPTED
    monkeypatch.undo()
    assert not (tmp_path / "av_scene" / "preempted" / "FINISHED").exists()
    train.main(argv(small_root, tmp_path, "preempted") + ["--resume"])
    straight, resumed = (final_weights(tmp_path / "av_scene" / n) for n in ("straight", "preempted"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_divergence_stops_with_one_line_and_exit_3(small_root, tmp_path, expect_divergence):
    expect_divergence(lambda: train.main(argv(small_root, tmp_path, "diverged", "train.lr=1e6")),
                      tmp_path / "av_scene" / "diverged")


def test_kill_9_at_a_random_step_then_resume_is_exact(small_root, tmp_path, kill_9_and_resume):
    kill_9_and_resume(lambda name, *extra: [sys.executable, "-m", "av_scene.train",
                                            *argv(small_root, tmp_path, name, "train.mixup_alpha=0.4", *extra)],
                      tmp_path / "av_scene", seed=5)
