"""train.pseudo_labels_from: the unlabelled clips tagged by a trained run join the weak train clips
(the DCASE2018 baseline's second pass). The labels are the source model's tags, written once and
read back on resume; mistakes are one line."""
import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from common.checkpoint import load_checkpoint
from common.config import REPO_ROOT, ConfigError, load_config
from common.preemption import EXIT_PREEMPTED, PreemptionFlag
from sed import evaluate, train
from sed.config import CLASSES, Config
from sed.data import frames_per_clip, load_features
from sed.mean_teacher import judged_weights
from sed.models import build_model
from sed.prepare import Split, features_dir
from sed.pseudo_labels import tag_clips

UNLABELLED = "data.unlabelled_audio=[audio/train/unlabel_in_domain]"


@pytest.fixture(scope="module")
def source_run(unlabelled_root, tiny_args, tmp_path_factory):
    """A supervised first pass. The tiny model's clip probabilities all lie near 0.5, so its tag
    threshold is then set to the median of the clips' highest probabilities: some clips are tagged,
    others not."""
    runs = tmp_path_factory.mktemp("sed_pl_runs")
    train.main(tiny_args(unlabelled_root, runs, "first", UNLABELLED))
    run_dir = runs / "sed" / "first"
    probs, _ = source_probabilities(run_dir, unlabelled_root)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["postprocess"]["tag_threshold"] = float(np.median(probs.max(1)))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def source_probabilities(source_run, unlabelled_root):
    """The source best.pt's clip probabilities of the unlabelled clips (clips, classes), computed here
    (with the teacher of a mean-teacher run), and the clips' names."""
    cfg = load_config(Config, source_run / "config.yaml", [])
    state = load_checkpoint(source_run / "checkpoints" / "best.pt")
    model = build_model(cfg.model, cfg.features.n_mels, len(CLASSES)).eval()
    model.load_state_dict(state["teacher" if cfg.train.method == "mean_teacher" else "model"])
    features = features_dir(cfg)
    files = sorted(p.name for p in (unlabelled_root / "audio" / "train" / "unlabel_in_domain").glob("*.wav"))
    mels, _ = load_features(features / "unlabel_in_domain.h5", files, frames_per_clip(cfg.features))
    with torch.no_grad():
        return model(torch.from_numpy((mels - state["band_mean"]) / state["band_std"]))[1].numpy(), files


def expected_tags(source_run, unlabelled_root):
    """{split/filename: labels} and the untagged names, from the source's best.pt and tag threshold."""
    probs, files = source_probabilities(source_run, unlabelled_root)
    threshold = load_config(Config, source_run / "config.yaml", []).postprocess.tag_threshold
    tagged = {f"unlabel_in_domain/{f}": [c for c, p in zip(CLASSES, row) if p > threshold]
              for f, row in zip(files, probs)}
    return {k: v for k, v in tagged.items() if v}, sorted(k for k, v in tagged.items() if not v)


def read_labels(run_dir):
    lines = (run_dir / "pseudo_labels.tsv").read_text().splitlines()
    assert lines[0] == "filename\tevent_labels"
    return {name: labels.split(",") for name, labels in (line.split("\t") for line in lines[1:])}


def test_the_source_models_tags_join_the_train_clips_and_resume_reads_them_back(
        unlabelled_root, source_run, tiny_args, tmp_path, monkeypatch, signal_after, capsys):
    expected, untagged = expected_tags(source_run, unlabelled_root)
    assert expected and untagged  # the fixture's threshold gives both kinds
    second = ["train.pseudo_labels_from=" + str(source_run), UNLABELLED, "run.checkpoint_every_steps=1"]
    straight_dir = tmp_path / "sed" / "straight"
    straight_dir.mkdir(parents=True)  # an earlier attempt that stopped before its first checkpoint
    (straight_dir / "pseudo_labels.tsv").write_text("filename\tevent_labels\nunlabel_in_domain/stale.wav\tDog\n")
    capsys.readouterr()
    train.main(tiny_args(unlabelled_root, tmp_path, "straight", *second))
    out = capsys.readouterr().out
    assert read_labels(straight_dir) == expected
    assert (straight_dir / "pseudo_labels_untagged.txt").read_text().split() == untagged
    assert f"{len(expected)} of 10 unlabelled clips tagged" in out
    weak_train = int(re.search(r"weak clips: (\d+) train", out).group(1))
    assert f"train clips with the pseudo-labelled ones: {weak_train + len(expected)}" in out
    straight = load_checkpoint(sorted((straight_dir / "checkpoints").glob("step-*.pt"))[-1])
    assert straight["step"] == 2 * ((weak_train + len(expected)) // 8)  # batch 8, 2 epochs
    # the band statistics come from the weak train clips alone: the source run's, on the same split
    source_state = load_checkpoint(source_run / "checkpoints" / "best.pt")
    assert np.array_equal(straight["band_mean"], source_state["band_mean"])
    assert np.array_equal(straight["band_std"], source_state["band_std"])

    # preempted, then resumed after the source run is gone: the labels come from the run folder
    monkeypatch.setattr(train, "PreemptionFlag", signal_after(3))
    with pytest.raises(SystemExit) as stopped:
        train.main(tiny_args(unlabelled_root, tmp_path, "preempted", *second))
    assert stopped.value.code == EXIT_PREEMPTED
    monkeypatch.setattr(train, "PreemptionFlag", PreemptionFlag)
    moved = tmp_path / "moved_away"
    shutil.move(source_run, moved)
    try:
        train.main(tiny_args(unlabelled_root, tmp_path, "preempted", *second) + ["--resume"])
    finally:
        shutil.move(moved, source_run)
    resumed = load_checkpoint(sorted((tmp_path / "sed" / "preempted" / "checkpoints").glob("step-*.pt"))[-1])
    assert resumed["step"] == straight["step"]
    for name, value in straight["model"].items():
        assert torch.equal(resumed["model"][name], value), name


@pytest.mark.parametrize("overrides,message", [
    ([], "train.pseudo_labels_from learns from unlabelled clips: set data.unlabelled_audio"),
    ([UNLABELLED, "features.n_mels=32", "features.hop_ms=40"],
     "was trained on other features (features.hop_ms=80.0 there, 40.0 here; features.n_mels=64 there, 32 here)"),
])
def test_pseudo_label_mistakes_are_one_error_line(unlabelled_root, source_run, tiny_args, tmp_path, train_error,
                                                  overrides, message):
    assert message in train_error(tiny_args(unlabelled_root, tmp_path, "bad", f"train.pseudo_labels_from={source_run}",
                                            *overrides))


def test_a_missing_source_run_is_one_error_line(unlabelled_root, tiny_args, tmp_path, train_error):
    assert "nowhere" in train_error(tiny_args(unlabelled_root, tmp_path, "bad",
                                              f"train.pseudo_labels_from={tmp_path / 'nowhere'}", UNLABELLED))


def test_a_source_that_tags_nothing_is_one_error_line(unlabelled_root, source_run, tiny_args, tmp_path, train_error):
    strict = tmp_path / "strict"
    shutil.copytree(source_run, strict)
    config = yaml.safe_load((strict / "config.yaml").read_text())
    config["postprocess"]["tag_threshold"] = 1.0
    (strict / "config.yaml").write_text(yaml.safe_dump(config))
    err = train_error(tiny_args(unlabelled_root, tmp_path, "bad", f"train.pseudo_labels_from={strict}", UNLABELLED))
    assert "tags none of the 10 unlabelled clips above 1.0; train it further" in err


def test_tagging_in_chunks_gives_the_probabilities_of_one_pass(unlabelled_root, source_run):
    cfg = load_config(Config, source_run / "config.yaml", [])
    features = features_dir(cfg)
    files = sorted(p.name for p in (unlabelled_root / "audio" / "train" / "unlabel_in_domain").glob("*.wav"))
    split = Split("unlabel_in_domain", features / "unlabel_in_domain.h5", files, {}, None)
    whole, threshold, _ = tag_clips(str(source_run), [split], cfg.features, "cpu")
    chunked, _, _ = tag_clips(str(source_run), [split, split], cfg.features, "cpu", chunk=5)
    assert whole.shape == (10, len(CLASSES)) and threshold == cfg.postprocess.tag_threshold
    np.testing.assert_allclose(chunked, np.concatenate([whole, whole]), rtol=1e-5, atol=1e-6)
    expected, _ = source_probabilities(source_run, unlabelled_root)
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-6)


def test_a_mean_teacher_source_tags_with_its_teacher_unless_it_is_judged_by_its_student():
    state = {"model": {"w": 1}, "teacher": {"w": 2}}
    teacher_run = load_config(Config, None, ["train.method=mean_teacher"])
    assert judged_weights(teacher_run, state, "best.pt") == {"w": 2}
    student_run = load_config(Config, None, ["train.method=mean_teacher", "train.mean_teacher.evaluate=student"])
    assert judged_weights(student_run, state, "best.pt") == {"w": 1}
    assert judged_weights(load_config(Config, None, []), {"model": {"w": 1}, "teacher": None}, "best.pt") == {"w": 1}
    with pytest.raises(ConfigError, match="best.pt holds no mean teacher"):
        judged_weights(teacher_run, {"model": {"w": 1}, "teacher": None}, "best.pt")


def test_the_course_mean_teacher_config_on_the_course_layout_then_a_pseudo_label_pass(
        unlabelled_root, tmp_path, course_copy, capsys):
    # The path a course student takes: configs/mean_teacher.yaml on the course's folder (label/..., no
    # test split, the unlabelled in-domain folder), evaluated, then a second pass tagged by its teacher.
    root = course_copy(unlabelled_root, tmp_path, [f"{i}\t{c}" for i, c in enumerate(CLASSES)])
    shrink = [f"data.root={root}", "data.workers=1", "features.sample_rate=16000", "features.n_fft=1024",
              "features.hop_ms=80", "model.conv_channels=[4,4]", "model.freq_pool=[8,8]", "model.time_pool=[1,1]",
              "model.rnn_hidden=8", "model.rnn_layers=1", "train.epochs=2", "train.batch_size=8",
              "train.mean_teacher.rampup_epochs=1", f"run.root={tmp_path / 'runs'}"]
    course_config = str(REPO_ROOT / "sed" / "configs" / "mean_teacher.yaml")
    train.main(["--config", course_config, *shrink, "run.name=mt"])
    first = tmp_path / "runs" / "sed" / "mt"
    capsys.readouterr()
    evaluate.main([str(first)])
    out = capsys.readouterr().out
    assert "the mean teacher" in out and "eval: event F1" in out and "post-processing chosen" not in out
    # the teacher tags: make its threshold the median of the clips' highest probabilities (tiny model)
    probs, files = source_probabilities(first, root)
    config = yaml.safe_load((first / "config.yaml").read_text())
    config["postprocess"]["tag_threshold"] = threshold = float(np.median(probs.max(1)))
    (first / "config.yaml").write_text(yaml.safe_dump(config))
    train.main(["--config", course_config, *shrink, "run.name=second", "train.method=supervised",
                f"train.pseudo_labels_from={first}"])
    expected = {f"unlabel_in_domain/{f}": [c for c, p in zip(CLASSES, row) if p > threshold]
                for f, row in zip(files, probs)}
    assert read_labels(tmp_path / "runs" / "sed" / "second") == {k: v for k, v in expected.items() if v}
    evaluate.main([str(tmp_path / "runs" / "sed" / "second")])
    summary = json.loads((tmp_path / "runs" / "sed" / "second" / "summary.json").read_text())
    assert summary["status"] == "finished" and 0 <= summary["metrics"]["eval_event_f1_macro"] <= 1
    assert (tmp_path / "runs" / "sed" / "second" / "predictions_eval.tsv").is_file()
