"""Learning from unlabelled clips: the EMA teacher, the consistency ramp, batches that mix weak and
unlabelled clips (resumable, class-balanced on request), unlabelled clips kept out of the supervised
loss, exact resume with a teacher, and the switches that came with it (context gating, median windows
from event durations)."""
import json
import math

import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from common.preemption import EXIT_PREEMPTED, PreemptionFlag
from sed import evaluate, train
from sed.config import CLASSES, ModelConfig
from sed.data import TrainBatches
from sed.mean_teacher import consistency_loss, ema_update, make_teacher, sigmoid_rampup
from sed.models import build_model

# 22 weak train clips, 4 weak + 4 unlabelled per batch: 5 steps per epoch, 2 epochs
MEAN_TEACHER = ["train.method=mean_teacher", "data.unlabelled_audio=[audio/train/unlabel_in_domain]",
                "train.mean_teacher.unlabelled_fraction=0.5", "train.mean_teacher.rampup_epochs=1",
                "augment.spec_augment=true", "augment.noise=true", "run.checkpoint_every_steps=1", "run.keep_last=20"]


@pytest.fixture(scope="module")
def straight_mt(unlabelled_root, tiny_args, tmp_path_factory):
    run_root = tmp_path_factory.mktemp("sed_mt_runs")
    train.main(tiny_args(unlabelled_root, run_root, "straight", *MEAN_TEACHER))
    return run_root


def test_ema_update_moves_the_teacher_towards_the_student():
    student = torch.nn.Linear(3, 2)
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    start = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema_update(teacher, student, decay=0.9, step=100)    # 1 - 1/101 > 0.9: the decay applies
    for t, t0, s in zip(teacher.parameters(), start, student.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * s)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, decay=0.999, step=1)    # early: a = 1 - 1/2, a plain average
    for t, t0, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.5 * t0 + 0.5 * s)


def test_consistency_weight_ramps_up_as_a_sigmoid():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(1000, 100) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0                    # no ramp
    ramp = [sigmoid_rampup(s, 100) for s in range(101)]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))


def test_consistency_loss_is_the_clip_mse_plus_the_weighted_frame_mse_with_no_gradient_to_the_teacher():
    g = torch.Generator().manual_seed(0)
    student_frames, teacher_frames = torch.rand(2, 3, 5, 10, generator=g)
    student_clips, teacher_clips = torch.rand(2, 3, 10, generator=g)
    student_frames.requires_grad_(True)
    teacher_frames.requires_grad_(True)
    clip = ((student_clips - teacher_clips) ** 2).mean()
    frame = ((student_frames - teacher_frames) ** 2).mean()
    both = consistency_loss(student_frames, student_clips, teacher_frames, teacher_clips)
    assert torch.allclose(both, clip + frame)
    assert torch.allclose(consistency_loss(student_frames, student_clips, teacher_frames, teacher_clips, 0.5),
                          clip + 0.5 * frame)
    assert torch.allclose(consistency_loss(student_frames, student_clips, teacher_frames, teacher_clips, 0.0), clip)
    both.backward()
    assert student_frames.grad is not None and teacher_frames.grad is None


def test_batches_mix_weak_and_unlabelled_clips_at_the_ratio_and_resume_exactly():
    targets = np.eye(len(CLASSES), dtype=np.float32)[np.arange(20) % len(CLASSES)]
    batches = TrainBatches(targets, n_labelled=4, n_unlabelled_clips=30, n_unlabelled=12, seed=3)
    epochs = []
    for epoch in range(3):
        batches.set_epoch(epoch, global_step=5 * epoch)
        epochs.append(list(batches))
    for batch in (b for epoch in epochs for b in epoch):
        assert len(batch) == 16 and all(i < 20 for i in batch[:4]) and all(i >= 20 for i in batch[4:])
    for epoch in epochs:  # one epoch = each weak clip once
        assert len(epoch) == 5 and sorted(i for b in epoch for i in b[:4]) == list(range(20))
    stream = [i for epoch in epochs for b in epoch for i in b[4:]]  # 180 draws = 6 passes over the 30 clips
    for k in range(6):
        assert sorted(stream[30 * k:30 * (k + 1)]) == list(range(20, 50))
    assert stream[60:120] != stream[:60]  # a new epoch continues the stream, it does not start it again
    batches.set_epoch(1, start_step=2, global_step=7)  # resumed after 2 batches of epoch 1
    assert list(batches) == epochs[1][2:]


def test_supervised_batches_are_the_ones_the_plain_shuffled_loader_made():
    """Without unlabelled clips the batches are those of common's ResumableSampler in a DataLoader (the
    order before this class existed), for every rank and a mid-epoch start: supervised runs are unchanged."""
    from common.distributed import ResumableSampler
    for world_size in (1, 2):
        for rank in range(world_size):
            sampler = ResumableSampler(43, shuffle=True, seed=5, rank=rank, world_size=world_size, drop_last=True)
            sampler.set_epoch(2, start=2 * 4)
            before = [b.tolist() for b in torch.utils.data.DataLoader(range(43), batch_size=4, sampler=sampler,
                                                                       drop_last=True)]
            batches = TrainBatches(np.zeros((43, len(CLASSES)), dtype=np.float32), 4, seed=5, rank=rank,
                                   world_size=world_size)
            batches.set_epoch(2, start_step=2)
            assert list(batches) == before


def test_class_balanced_batches_draw_a_rare_class_as_often_as_a_common_one():
    targets = np.zeros((40, len(CLASSES)), dtype=np.float32)
    targets[0, 0] = 1          # one clip of class 0
    targets[1:, 1] = 1         # 39 of class 1
    draws = []
    for balanced in (False, True):
        batches = TrainBatches(targets, n_labelled=8, balanced=balanced, seed=0)
        picked = []
        for epoch in range(20):
            batches.set_epoch(epoch)
            picked += [i for b in batches for i in b]
        draws.append(picked.count(0) / len(picked))
    assert draws[0] == pytest.approx(1 / 40)
    assert 0.4 < draws[1] < 0.6


def test_unlabelled_clips_never_reach_the_supervised_loss(unlabelled_root, tiny_args, tmp_path, monkeypatch):
    seen = []
    real_loss = train.weak_label_loss

    def recording_loss(clip_probs, targets):
        seen.append(targets.clone())
        return real_loss(clip_probs, targets)

    monkeypatch.setattr(train, "weak_label_loss", recording_loss)
    train.main(tiny_args(unlabelled_root, tmp_path, "spy", *MEAN_TEACHER[:3], "train.epochs=1"))
    training_calls = [t for t in seen if len(t) == 4]   # the valid split has 2 clips
    assert len(training_calls) == 5                     # every step: its 4 weak clips only
    assert all(torch.isfinite(t).all() for t in seen)   # unlabelled clips carry NaN targets


def test_resume_with_a_teacher_is_bit_exact(unlabelled_root, tiny_args, straight_mt):
    steps = sorted((straight_mt / "sed" / "straight" / "checkpoints").glob("step-*.pt"))
    assert len(steps) == 10
    straight = load_checkpoint(steps[-1])
    assert straight["teacher"] is not None and not _same(straight["teacher"], straight["model"])
    train.main(tiny_args(unlabelled_root, straight_mt, "resumed", *MEAN_TEACHER) + ["--resume", str(steps[2])])
    resumed = load_checkpoint(straight_mt / "sed" / "resumed" / "checkpoints" / "step-00000010.pt")
    assert _same(resumed["model"], straight["model"]) and _same(resumed["teacher"], straight["teacher"])
    assert resumed["history"] == straight["history"]


def test_preempted_mean_teacher_resumes_exactly_and_evaluates_the_teacher(unlabelled_root, tiny_args, straight_mt,
                                                                          monkeypatch, signal_after, capsys):
    monkeypatch.setattr(train, "PreemptionFlag", signal_after(7))
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_args(unlabelled_root, straight_mt, "preempted", *MEAN_TEACHER))
    assert exit_info.value.code == EXIT_PREEMPTED
    monkeypatch.setattr(train, "PreemptionFlag", PreemptionFlag)
    train.main(tiny_args(unlabelled_root, straight_mt, "preempted", *MEAN_TEACHER) + ["--resume"])
    run_dir = straight_mt / "sed" / "preempted"
    resumed = load_checkpoint(run_dir / "checkpoints" / "step-00000010.pt")
    straight = load_checkpoint(straight_mt / "sed" / "straight" / "checkpoints" / "step-00000010.pt")
    assert _same(resumed["model"], straight["model"]) and _same(resumed["teacher"], straight["teacher"])
    capsys.readouterr()
    evaluate.main([str(run_dir)])
    assert "the mean teacher" in capsys.readouterr().out


@pytest.mark.parametrize("override,message", [
    ("data.unlabelled_audio=[]", "train.method=mean_teacher learns from unlabelled clips: set data.unlabelled_audio"),
    ("augment.mixup=true", "augment.mixup mixes weak labels"),
    ("data.unlabelled_audio=[audio/nowhere]", "data.unlabelled_audio: folder"),
    ("train.mean_teacher.unlabelled_fraction=0.01", "leaves 0 unlabelled and 8 weak clips"),
])
def test_mean_teacher_mistakes_are_one_error_line(unlabelled_root, tiny_args, tmp_path, train_error, override,
                                                  message):
    assert message in train_error(tiny_args(unlabelled_root, tmp_path, "bad", *MEAN_TEACHER[:2], override))


def test_context_gating_doubles_the_conv_outputs_and_keeps_the_shapes():
    plain, gated = (build_model(ModelConfig(conv_channels=[4, 4], freq_pool=[8, 8], time_pool=[2, 1], rnn_hidden=8,
                                            context_gating=gating), 64, len(CLASSES)) for gating in (False, True))
    frame_probs, clip_probs = gated(torch.randn(2, 50, 64))
    assert frame_probs.shape == (2, 50, len(CLASSES)) and clip_probs.shape == (2, len(CLASSES))
    assert gated.convs[0].conv.out_channels == 8 and plain.convs[0].conv.out_channels == 4


def test_median_windows_from_event_durations():
    reference = {"a.wav": [(0.0, 1.0, "Dog"), (2.0, 4.0, "Dog"), (0.0, 6.0, "Frying")], "b.wav": []}
    windows = evaluate.median_windows_from_durations(reference, fraction=0.5, default_s=0.3)
    assert windows[CLASSES.index("Dog")] == pytest.approx(0.75)       # mean 1.5 s
    assert windows[CLASSES.index("Frying")] == pytest.approx(3.0)
    assert windows[CLASSES.index("Cat")] == pytest.approx(0.3)        # no events: the configured window


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_pt_is_chosen_after_the_consistency_ramp_up(unlabelled_root, tiny_args, tmp_path, monkeypatch):
    """A teacher still ramping up is not a best.pt candidate: on a tiny valid split an epoch-0 teacher
    (about the initial weights) ranked first and was evaluated as the model (event F1 0.000). Here the
    valid mAP falls every epoch, so epoch 0 would win; with a 2-epoch ramp-up epoch 1 is the first candidate."""
    real_validate, calls = train.validate, []

    def falling_map(*args, **kwargs):
        calls.append(1)
        return {**real_validate(*args, **kwargs), "valid_mAP": 1.0 - 0.1 * len(calls)}

    monkeypatch.setattr(train, "validate", falling_map)
    overrides = [*MEAN_TEACHER, "train.mean_teacher.rampup_epochs=2", "train.epochs=3"]
    train.main(tiny_args(unlabelled_root, tmp_path, "ramp", *overrides))
    assert json.loads((tmp_path / "sed" / "ramp" / "summary.json").read_text())["best_epoch"] == 1
