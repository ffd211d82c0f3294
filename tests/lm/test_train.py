"""End to end: training, exact resume, evaluation and summary.json, user mistakes."""
import json
import math
import shutil

import pytest
import torch

import lm.train
from common.checkpoint import load_checkpoint
from lm import evaluate
from lm.synthetic import MarkovSource, write_corpus

TINY = ["model.emb_dim=16", "model.hidden=24", "train.batch_size=4", "train.bptt=10",
        "train.eval_batch_size=2", "train.log_every_steps=5"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    write_corpus(folder, train_tokens=1200, eval_tokens=300, vocab_size=12)
    return folder


def train(corpus_dir, root, name, *extra, resume=None):
    argv = ["--config", "lm/configs/demo.yaml", f"data.dir={corpus_dir}", f"run.root={root}",
            f"run.name={name}", *TINY, *extra]
    lm.train.main(argv + (["--resume", resume] if resume else []))
    return root / "lm" / name


def test_resume_mid_epoch_is_bit_exact(corpus_dir, tmp_path):
    """Interrupted after step 7 (mid-epoch 1, hidden state carried) and resumed: the same weights
    as the uninterrupted run. Variable BPTT, weight drop and dropout exercise every RNG."""
    extra = ["train.epochs=2", "train.variable_bptt=true", "run.checkpoint_every_steps=7", "run.keep_last=50"]
    straight = train(corpus_dir, tmp_path, "straight", *extra)
    step_files = sorted((straight / "checkpoints").glob("step-*.pt"))
    mid = load_checkpoint(step_files[0])
    assert mid["step"] == 7 and mid["step_in_epoch"] == 7 and mid["hidden"] is not None
    resumed = tmp_path / "lm" / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(step_files[0], resumed / "checkpoints" / step_files[0].name)
    train(corpus_dir, tmp_path, "resumed", *extra, resume="latest")
    final_a = load_checkpoint(step_files[-1])
    final_b = load_checkpoint(sorted((resumed / "checkpoints").glob("step-*.pt"))[-1])
    assert final_a["step"] == final_b["step"]
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key
    assert final_a["valid_losses"] == final_b["valid_losses"]
    check_tensorboard(straight, epochs=2)


def check_tensorboard(run_dir, epochs):
    """Per epoch: train, valid AND test loss and perplexity, lr, grad norm, tokens/s."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for split in ("train", "valid", "test"):
        assert {f"loss/{split}", f"ppl/{split}"} <= tags
        assert [e.step for e in events.Scalars(f"ppl/{split}")] == list(range(1, epochs + 1))
    assert {"lr", "grad_norm", "tokens_per_s"} <= tags


def test_preemption_checkpoints_and_exits_75(corpus_dir, tmp_path, monkeypatch):
    """A signal (simulated at the 5th step boundary) saves a checkpoint there and exits with 75."""
    calls = iter(range(1000))
    monkeypatch.setattr(lm.train, "any_rank_requested", lambda flag, device=None: next(calls) == 4)
    with pytest.raises(SystemExit) as stop:
        train(corpus_dir, tmp_path, "preempted", "train.epochs=1")
    assert stop.value.code == 75
    state = load_checkpoint(tmp_path / "lm" / "preempted" / "checkpoints" / "step-00000005.pt")
    assert state["step"] == 5 and state["step_in_epoch"] == 5


@pytest.mark.parametrize("arch,extra", [
    ("transformer", ["model.heads=2", "model.ff_dim=32", "model.layers=1", "train.optimizer=adamw",
                     "train.schedule=inverse_sqrt", "train.warmup_steps=5", "eval.context=16",
                     "eval.stride=4"]),
    ("ffnn", ["model.context_size=3", "train.optimizer=ntasgd", "train.lr=1.0", "train.nonmono=1",
              "train.schedule=plateau", "train.early_stop_patience=3"]),
])
def test_train_then_evaluate_writes_summary(corpus_dir, tmp_path, arch, extra, capsys):
    run_dir = train(corpus_dir, tmp_path, arch, f"model.arch={arch}", "train.epochs=3", *extra)
    evaluate.main([str(run_dir), "eval.generate_tokens=12", "eval.top_k=5"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["metrics"]) == {"valid_ppl", "test_ppl", "optimal_test_ppl"}
    assert 1 < summary["metrics"]["optimal_test_ppl"] < summary["metrics"]["test_ppl"] < 12 * 2
    assert summary["params"] > 0 and summary["train_seconds"] > 0 and summary["epochs"] >= 1
    assert len((run_dir / "samples.txt").read_text().split()) >= 12
    events = list((run_dir / "tb").glob("events.*"))
    assert events, "tensorboard events are written"
    out = capsys.readouterr().out
    assert "best possible test perplexity" in out


def test_parameter_limit_is_60m_and_enforced(corpus_dir, tmp_path, monkeypatch, capsys):
    assert lm.train.MAX_PARAMETERS == 60_000_000
    monkeypatch.setattr(lm.train, "MAX_PARAMETERS", 1000)
    with pytest.raises(SystemExit) as stop:
        train(corpus_dir, tmp_path, "big")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lstm 2x24 emb16 has") and "over the 1,000 limit" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("override,message", [
    ("model.hiden=10", "did you mean model.hidden"),
    ("model.arch=cnn", "model.arch: expected one of"),
    ("data.dir={tmp}/nowhere", "data folder {tmp}/nowhere not found"),
])
def test_user_mistakes_are_one_line(corpus_dir, tmp_path, capsys, override, message):
    override, message = override.format(tmp=tmp_path), message.format(tmp=tmp_path)
    with pytest.raises(SystemExit) as stop:
        train(corpus_dir, tmp_path, "bad", override, "data.generate=")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_markov_source_entropy_rate_matches_a_long_sample():
    import numpy as np
    source = MarkovSource(vocab_size=10, branching=3, seed=3)
    ids = source.sample(200_000, np.random.default_rng(0))
    assert source.nll_nats(ids) == pytest.approx(source.entropy_rate_nats(), rel=0.01)
    assert math.exp(source.entropy_rate_nats()) < 10


def test_divergence_stops_with_one_line_and_exit_3(corpus_dir, tmp_path, expect_divergence):
    expect_divergence(lambda: train(corpus_dir, tmp_path, "diverged", "train.lr=1e6"), tmp_path / "lm" / "diverged")
