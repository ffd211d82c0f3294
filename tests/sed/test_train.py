"""End to end on the tiny generated set: exact resume (mid-epoch and at an epoch boundary), preemption,
evaluation outputs, and one-line errors for user mistakes."""
import json
import sys

import pytest
import torch

from common.checkpoint import load_checkpoint
from common.preemption import EXIT_PREEMPTED, PreemptionFlag
from sed import evaluate, train

AUGMENT = ["augment.spec_augment=true", "augment.mixup=true", "augment.time_shift=true", "augment.noise=true",
           "run.checkpoint_every_steps=1", "run.keep_last=20"]


def _weights(path):
    return load_checkpoint(path)["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight_run(tiny_root, tiny_args, tmp_path_factory):
    """2 epochs x 2 steps with every augmentation on, a checkpoint after every step."""
    run_root = tmp_path_factory.mktemp("sed_runs")
    train.main(tiny_args(tiny_root, run_root, "straight", *AUGMENT))
    return run_root


@pytest.mark.parametrize("resume_step", [1, 2])   # mid-epoch, epoch boundary
def test_resume_is_bit_exact(tiny_root, tiny_args, straight_run, resume_step):
    steps = sorted((straight_run / "sed" / "straight" / "checkpoints").glob("step-*.pt"))
    assert len(steps) == 4
    name = f"resumed{resume_step}"
    train.main(tiny_args(tiny_root, straight_run, name, *AUGMENT) + ["--resume", str(steps[resume_step - 1])])
    resumed = straight_run / "sed" / name / "checkpoints" / "step-00000004.pt"
    assert _same(_weights(resumed), _weights(steps[-1]))
    assert load_checkpoint(resumed)["history"] == load_checkpoint(steps[-1])["history"]


def test_preemption_checkpoints_exits_75_and_resumes_exactly(tiny_root, tiny_args, straight_run, monkeypatch,
                                                          signal_after):
    monkeypatch.setattr(train, "PreemptionFlag", signal_after(3))
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_args(tiny_root, straight_run, "preempted", *AUGMENT))
    assert exit_info.value.code == EXIT_PREEMPTED
    run_dir = straight_run / "sed" / "preempted"
    assert load_checkpoint(run_dir / "checkpoints" / "step-00000003.pt")["step"] == 3
    monkeypatch.setattr(train, "PreemptionFlag", PreemptionFlag)
    train.main(tiny_args(tiny_root, straight_run, "preempted", *AUGMENT) + ["--resume"])
    straight = straight_run / "sed" / "straight" / "checkpoints" / "step-00000004.pt"
    assert _same(_weights(run_dir / "checkpoints" / "step-00000004.pt"), _weights(straight))
    assert (run_dir / "FINISHED").is_file()


def test_evaluate_writes_predictions_report_figures_and_summary(straight_run):
    run_dir = straight_run / "sed" / "straight"
    evaluate.main([str(run_dir)])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "crnn-linear_softmax" and summary["params"] > 0
    assert set(summary["metrics"]) == {"eval_event_f1_macro", "eval_event_f1_macro_sed_eval",
                                       "eval_event_er_micro", "eval_segment_f1_macro",
                                       "eval_tag_f1_macro", "eval_mAP"}
    assert all(isinstance(v, float) for v in summary["metrics"].values())
    assert summary["train_seconds"] > 0
    predictions = (run_dir / "predictions_eval.tsv").read_text().splitlines()
    assert predictions[0] == "filename\tonset\toffset\tevent_label"
    for line in predictions[1:]:
        filename, onset, offset, label = line.split("\t")
        assert 0 <= float(onset) < float(offset) <= 10.0
    assert len((run_dir / "sweep.csv").read_text().splitlines()) == 1 + 2
    assert "t_collar 0.2 s, percentage_of_length 0.2" in (run_dir / "report.md").read_text()
    assert len(list((run_dir / "figures").glob("timeline_*.png"))) == 1


@pytest.mark.parametrize("override,message", [
    ("train.lr=fast", "train.lr: expected a number"),
    ("model.poolin=max", "did you mean model.pooling?"),
    ("model.freq_pool=[4,4,4]", "model.conv_channels, model.freq_pool and model.time_pool need the same length"),
    ("data.valid_fraction=0.01", "data.valid_fraction=0.01 leaves 24 train and 0 valid clips of the 24 weak clips"),
    ("data.valid_fraction=0.99", "data.valid_fraction=0.99 leaves 0 train and 24 valid clips of the 24 weak clips"),
])
def test_user_mistakes_are_one_error_line(tiny_root, tiny_args, tmp_path, train_error, override, message):
    assert message in train_error(tiny_args(tiny_root, tmp_path, "bad", override))


def test_missing_data_root_is_one_error_line(tiny_args, tmp_path, train_error):
    assert "nowhere does not exist" in train_error(tiny_args(tmp_path / "nowhere", tmp_path, "missing"))


def test_divergence_stops_with_one_line_and_exit_3(tiny_root, tiny_args, tmp_path, expect_divergence):
    expect_divergence(lambda: train.main(tiny_args(tiny_root, tmp_path, "diverged", "train.lr=1e6")),
                      tmp_path / "sed" / "diverged")


def test_kill_9_at_a_random_step_then_resume_is_exact(tiny_root, tiny_args, tmp_path, kill_9_and_resume):
    kill_9_and_resume(lambda name, *extra: [sys.executable, "-m", "sed.train",
                                            *tiny_args(tiny_root, tmp_path, name, *AUGMENT, *extra)],
                      tmp_path / "sed", seed=3)


def test_best_pt_tie_goes_to_the_lower_valid_loss():
    """A small valid split saturates at mAP 1.0 from epoch 0: the strict > kept the untrained epoch."""
    from sed.train import selection_key
    untrained, trained = {"valid_mAP": 1.0, "valid_loss": 0.69}, {"valid_mAP": 1.0, "valid_loss": 0.21}
    assert selection_key(trained) > selection_key(untrained)
    assert selection_key({"valid_mAP": 0.9, "valid_loss": 0.01}) < selection_key(untrained)


def test_cpu_threads_setting_is_applied(tiny_root, tiny_args, tmp_path, capsys):
    torch.set_num_threads(2)
    try:
        train.main(tiny_args(tiny_root, tmp_path, "threads", "train.epochs=1", "run.cpu_threads=1"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)
    assert "warning: the valid split has only" in capsys.readouterr().out  # 24 weak clips: a tiny split


def test_an_eval_clip_without_audio_counts_its_events_as_misses(tiny_root, tiny_args, tmp_path, capsys):
    import csv
    import shutil
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("features"))  # earlier tests' cache has the clip
    rows = list(csv.reader((root / "metadata" / "eval" / "eval.csv").open(), delimiter="\t"))[1:]
    events_of = lambda name: sum(1 for row in rows if row[0] == name and len(row) > 1 and row[1])
    gone = max({row[0] for row in rows}, key=events_of)  # the clip with the most events loses its audio
    (root / "audio" / "eval" / gone).unlink()
    train.main(tiny_args(root, tmp_path, "missing", "train.epochs=1"))
    capsys.readouterr()
    evaluate.main([str(tmp_path / "sed" / "missing")])
    assert f"their {events_of(gone)} reference events count as misses" in capsys.readouterr().out
    scored = list(csv.DictReader((tmp_path / "sed" / "missing" / "class_wise_eval.csv").open()))
    assert sum(int(row["reference_events"]) for row in scored) == sum(events_of(n) for n in {r[0] for r in rows})
