"""End to end on a tiny shapes set: exact resume mid-epoch, evaluation outputs and summary.json,
the encoders, the feature cache, and one-line errors for user mistakes."""
import json
import os
import shutil
import signal
import sys

import pytest
import torch

import captioning.train
from captioning import evaluate
from captioning.models.encoder import EncoderConfig, ImageEncoder
from common.checkpoint import load_checkpoint

TINY = ["data.generate_shapes=30", "data.image_size=32", "encoder.channels=16", "encoder.grid_size=4",
        "decoder.embed_dim=16", "decoder.hidden_dim=24", "decoder.attention_dim=16", "train.batch_size=16",
        "train.log_every_steps=2", "decode.max_len=12", "run.device=cpu"]


def train(data_dir, root, name, *extra, resume=None):
    argv = ["--config", "captioning/configs/demo.yaml", f"data.root={data_dir}", f"run.root={root}",
            f"run.name={name}", *TINY, *extra]
    captioning.train.main(argv + (["--resume", resume] if resume else []))
    return root / "captioning" / name


def test_resume_mid_epoch_and_after_preemption_is_bit_exact(tmp_path, monkeypatch):
    """Stopped after step 5 of 14 (mid-epoch 1, scheduled sampling drawing from the RNG, dropout on)
    and resumed: the same weights as the uninterrupted run."""
    extra = ["data.generate_shapes=20", "train.epochs=2", "run.checkpoint_every_steps=5", "run.keep_last=50",
             "sampling.schedule=exponential", "sampling.exponential_base=0.95", "sampling.min_prob=0"]
    data = tmp_path / "shapes"
    straight = train(data, tmp_path, "straight", *extra)
    assert (straight / "figures" / "teacher_forcing.png").stat().st_size > 0  # the schedule over the run
    mid = load_checkpoint(sorted((straight / "checkpoints").glob("step-*.pt"))[0])
    assert mid["step"] == 5 and mid["step_in_epoch"] == 5 and mid["epoch"] == 0
    resumed = tmp_path / "captioning" / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(sorted((straight / "checkpoints").glob("step-*.pt"))[0], resumed / "checkpoints")
    train(data, tmp_path, "resumed", *extra, resume="latest")
    a = load_checkpoint(sorted((straight / "checkpoints").glob("step-*.pt"))[-1])
    b = load_checkpoint(sorted((resumed / "checkpoints").glob("step-*.pt"))[-1])
    assert a["step"] == b["step"] == 14
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["valid_loss"] for h in a["history"]] == [h["valid_loss"] for h in b["history"]]

    # Preempted by SIGUSR1 during step 8 (the first of epoch 2): checkpoint, exit 75, then --resume.
    real_schedule = captioning.train.teacher_forcing_prob
    calls = []

    def schedule_that_signals(cfg, i):
        calls.append(i)
        if len(calls) == 10:            # one call per epoch start + one per step
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_schedule(cfg, i)

    monkeypatch.setattr(captioning.train, "teacher_forcing_prob", schedule_that_signals)
    with pytest.raises(SystemExit) as exit_info:
        train(data, tmp_path, "preempted", *extra)
    assert exit_info.value.code == 75
    monkeypatch.setattr(captioning.train, "teacher_forcing_prob", real_schedule)
    preempted = tmp_path / "captioning" / "preempted"
    assert load_checkpoint(sorted((preempted / "checkpoints").glob("step-*.pt"))[-1])["step"] == 8
    train(data, tmp_path, "preempted", *extra, resume="latest")
    c = load_checkpoint(sorted((preempted / "checkpoints").glob("step-*.pt"))[-1])
    assert all(torch.equal(value, c["model"][key]) for key, value in a["model"].items())


def test_frozen_cached_encoder_transformer_train_then_evaluate(tmp_path, capsys):
    """A frozen torchvision encoder whose features are cached to HDF5 once, a Transformer decoder,
    then evaluate.py: every output file and summary.json."""
    run = train(tmp_path / "shapes", tmp_path, "eval", "train.epochs=1", "decoder.kind=transformer",
                "decoder.heads=2", "decoder.layers=1", "decoder.ff_dim=32", "train.alpha_c=0",
                "encoder.name=resnet18", "encoder.pretrained=false", "encoder.finetune=none",
                "encoder.grid_size=2", f"encoder.cache_dir={tmp_path}/cache")
    assert len(list((tmp_path / "cache").glob("resnet18-random-32px-2x2.h5"))) == 1
    assert (run / "FINISHED").is_file() and (run / "vocab.json").is_file()
    evaluate.main([str(run), "evaluate.meteor=false", "evaluate.human_ceiling=false", "evaluate.examples=2",
                   "evaluate.attention_figures=1", "evaluate.splits=[test]", "decode.beam_size=2"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "resnet18+transformer" and summary["params"] > 0
    assert {"test_bleu4", "test_cider", "test_rougel"} <= set(summary["metrics"])
    assert "SPICE" in summary["unavailable"] or "test_spice" in summary["metrics"]
    assert summary["train_seconds"] > 0 and summary["test_decode_images_per_s"] > 0
    assert len(list((run / "figures").glob("attention_*.png"))) == 1
    assert "== CIDEr: 2 best ==" in (run / "examples_test.txt").read_text()
    captions = json.loads((run / "captions_test.json").read_text())
    assert len(captions) == 10 and len(captions[0]["references"]) == 5
    out = capsys.readouterr().out
    assert "worst" in out
    if "SPICE" in summary["unavailable"]:  # one line for SPICE and SPIDEr, with the command that fixes it
        assert "SPICE and SPIDEr unavailable: " in out and out.count("SPIDEr unavailable") == 1
        assert "python -m captioning.get_spice" in out


def test_user_mistakes_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        captioning.train.main(["--config", "captioning/configs/demo.yaml", "decoder.hiden_dim=3"])
    assert exit_info.value.code == 2
    assert "did you mean decoder.hidden_dim" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        captioning.train.main(["--config", "captioning/configs/demo.yaml", "data.generate_shapes=0",
                               f"data.root={tmp_path}/none", f"run.root={tmp_path}"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data folder not found" in err
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / "no_run")])
    assert "neither a run folder nor a checkpoint file" in capsys.readouterr().err


def test_encoders_shapes_freezing_and_missing_weights(tmp_path, monkeypatch):
    resnet = ImageEncoder(EncoderConfig(name="resnet101", pretrained=False, finetune="last", grid_size=14))
    assert resnet(torch.randn(1, 3, 64, 64)).shape == (1, 196, 2048)
    trained = {n.split(".")[1] for n, p in resnet.named_parameters() if p.requires_grad}
    assert trained == {"7"}            # layer4 only
    vgg = ImageEncoder(EncoderConfig(name="vgg16", pretrained=False, grid_size=14))
    assert vgg(torch.randn(1, 3, 64, 64)).shape == (1, 196, 512) and vgg.frozen
    assert not any(p.requires_grad for p in vgg.parameters())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    from common.config import ConfigError
    with pytest.raises(ConfigError, match=r"resnet101-cd907fc2.pth.*get_model\('resnet101'"):
        ImageEncoder(EncoderConfig(name="resnet101", pretrained=True))


def test_feature_cache_matches_the_encoder(tmp_path):
    from captioning.data import DataConfig, ImageSource, load_corpus, normalize_images
    from captioning.features import cache_features
    corpus = load_corpus(DataConfig(root=str(tmp_path / "shapes"), generate_shapes=8))
    encoder = ImageEncoder(EncoderConfig(name="resnet18", pretrained=False, grid_size=2)).eval()
    names = corpus.splits["dev"][:3]
    path = cache_features(encoder, names, corpus.images_dir, 32, tmp_path / "f.h5", torch.device("cpu"))
    cached = ImageSource(names, corpus.images_dir, 32, features_path=path)
    images = ImageSource(names, corpus.images_dir, 32)
    with torch.no_grad():
        direct = encoder(normalize_images(torch.stack([images[i] for i in range(3)])))
    assert torch.allclose(torch.stack([cached[i] for i in range(3)]), direct, rtol=1e-2, atol=1e-2)


def test_divergence_stops_with_one_line_and_exit_3(tmp_path, expect_divergence):
    expect_divergence(lambda: train(tmp_path / "shapes", tmp_path, "diverged", "train.lr=1e6"),
                      tmp_path / "captioning" / "diverged")


def test_kill_9_at_a_random_step_then_resume_is_exact(tmp_path, kill_9_and_resume):
    def command(name, *extra):
        return [sys.executable, "-m", "captioning.train", "--config", "captioning/configs/demo.yaml",
                f"data.root={tmp_path / 'shapes'}", f"run.root={tmp_path}", f"run.name={name}", *TINY,
                "train.epochs=2", *extra]
    kill_9_and_resume(command, tmp_path / "captioning", seed=4)


def test_training_speed_is_per_epoch_even_with_mid_epoch_checkpoints(tmp_path):
    """The epoch's timer restarted at every checkpoint: 80k-173k images/s were reported."""
    run_dir = train(tmp_path / "shapes", tmp_path, "speed", "train.epochs=1", "run.checkpoint_every_steps=1")
    summary = json.loads((run_dir / "summary.json").read_text())
    captions = 30 * 5  # data.generate_shapes=30 images, 5 captions each, one epoch
    assert summary["history"][0]["train_images_per_s"] <= 2 * captions / summary["train_seconds"]


def test_frozen_stages_keep_their_batchnorm_statistics():
    """finetune=last: the frozen ResNet stages kept BatchNorm in train mode and their running
    statistics drifted with every batch."""
    encoder = ImageEncoder(EncoderConfig(name="resnet18", pretrained=False, finetune="last", grid_size=2)).train()
    bn_stats = lambda: {name: m.running_mean.clone() for name, m in encoder.trunk.named_modules()
                        if isinstance(m, torch.nn.BatchNorm2d)}
    before = bn_stats()
    encoder(torch.randn(2, 3, 64, 64))
    after = bn_stats()
    last_stage = {name for name, m in encoder.trunk.named_modules() if m in set(encoder.trainable_part.modules())}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= last_stage  # only the trained stage's statistics move
