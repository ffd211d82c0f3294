"""End to end: training, exact resume, evaluation and summary.json, user mistakes, divergence, and
run-folder integrity."""
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import common.checkpoint
import lm.train
from common.checkpoint import load_checkpoint
from common.sweep import collect
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
    assert json.loads((run_dir / "summary.json").read_text())["oov_rate"] == {"train": 0, "valid": 0, "test": 0}
    evaluate.main([str(run_dir), "eval.generate_tokens=40", "eval.top_k=5"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["metrics"]) == {"valid_ppl", "test_ppl", "optimal_test_ppl"}
    assert 1 < summary["metrics"]["optimal_test_ppl"] < summary["metrics"]["test_ppl"] < 12 * 2
    assert summary["params"] > 0 and summary["train_seconds"] > 0 and summary["epochs"] >= 1
    sample = (run_dir / "samples.txt").read_text()
    assert len(sample.split()) >= 12 and "<eos>" not in sample
    assert evaluate.as_lines(["a", "b", "<eos>", "c", "<eos>", "<eos>", "d"]) == "a b\nc\n\nd"
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
    ("model.layers=1", "model.hidden=24 would have no effect: with model.tie_weights=true"),  # TINY: emb 16
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

# --- run-folder integrity (issue 13): a finished run is never rewritten, a resume into another
# architecture or from unreadable checkpoints is one line, evaluation says when a run is unfinished,
# stale temporary files go, a full disk is one line and loses nothing, a sweep point trained with
# other settings is reported rather than relabelled, and a late signal keeps exit 0.

def one_error_line(capsys, call) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        call()
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_resume_of_a_finished_run_leaves_it_untouched_and_sweep_reports_the_mismatch(corpus_dir, tmp_path, capsys):
    run_dir = train(corpus_dir, tmp_path, "done", "train.epochs=2")
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "version.json", "summary.json")}
    train(corpus_dir, tmp_path, "done", "train.epochs=2", "model.hidden=32", "--resume")
    assert "not applied: model.hidden: 24 -> 32" in capsys.readouterr().out
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    evaluate.main([str(run_dir)])  # the run's own config still builds its model
    rows = collect("lm", tmp_path, ["done", "done"], [["model.hidden=24"], ["model.hidden=32"]])
    assert rows[0]["status"] == "finished" and rows[0]["test_ppl"] > 0
    assert rows[1]["status"].startswith("NOT this point") and "model.hidden is 24, not 32" in rows[1]["status"]
    assert "test_ppl" not in rows[1]


def test_resume_into_another_architecture_is_one_line_naming_the_keys(corpus_dir, tmp_path, capsys):
    run_dir = train(corpus_dir, tmp_path, "arch", "train.epochs=1")
    (run_dir / "FINISHED").unlink()  # as if stopped before the end
    line = one_error_line(capsys, lambda: train(corpus_dir, tmp_path, "arch", "model.hidden=32", "--resume"))
    assert "another architecture" in line and "model.hidden: 24 -> 32" in line


def test_unreadable_step_checkpoints_with_a_good_best_pt_is_one_line(corpus_dir, tmp_path, capsys):
    run_dir = train(corpus_dir, tmp_path, "corrupt", "train.epochs=1")
    (run_dir / "FINISHED").unlink()
    for path in (run_dir / "checkpoints").glob("step-*.pt"):
        path.write_bytes(b"\0" * 64)
    line = one_error_line(capsys, lambda: train(corpus_dir, tmp_path, "corrupt", "--resume"))
    best = run_dir / "checkpoints" / "best.pt"
    assert "step checkpoints" in line and "unreadable" in line and f"--resume {best}" in line
    train(corpus_dir, tmp_path, "corrupt", "--resume", str(run_dir / "checkpoints" / "best.pt"))
    assert (run_dir / "FINISHED").is_file()


def test_evaluating_an_unfinished_run_says_so_and_goes_on(corpus_dir, tmp_path, capsys):
    run_dir = train(corpus_dir, tmp_path, "unfinished", "train.epochs=1")
    (run_dir / "FINISHED").unlink()
    capsys.readouterr()
    evaluate.main([str(run_dir)])
    out = capsys.readouterr().out
    assert "has not finished training (no FINISHED file; newest checkpoint step-" in out
    assert (run_dir / "summary.json").is_file()


def test_stale_temporary_checkpoints_are_removed_at_start(corpus_dir, tmp_path):
    stale = tmp_path / "lm" / "stale" / "checkpoints" / ".step-00000003.pt.abc.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    train(corpus_dir, tmp_path, "stale", "train.epochs=1", "--resume")
    assert not stale.exists()


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(corpus_dir, tmp_path, capsys, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:  # the first checkpoint and its best.pt fit, the next does not
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(common.checkpoint.torch, "save", save_until_the_disk_fills)
    line = one_error_line(capsys, lambda: train(corpus_dir, tmp_path, "full", "train.epochs=2",
                                                "run.checkpoint_every_steps=5"))
    checkpoints = tmp_path / "lm" / "full" / "checkpoints"
    prefix = f"error: no space left on device while writing {checkpoints}/"
    assert line.startswith(prefix)
    failed = checkpoints / line[len(prefix):].split(";")[0]
    assert not failed.exists() and not list(checkpoints.glob(".*.tmp"))  # no half-written file
    newest = sorted(checkpoints.glob("step-*.pt"))[-1]
    assert load_checkpoint(newest)["step"] >= 5  # the previous checkpoint is intact
    if (checkpoints / "best.pt").exists():
        assert load_checkpoint(checkpoints / "best.pt")["step"] <= load_checkpoint(newest)["step"]


def test_a_signal_after_training_ended_exits_0():
    code = ("import os, signal, sys\nfrom common.preemption import PreemptionFlag\nflag = PreemptionFlag()\n"
            "flag.finish()\nos.kill(os.getpid(), signal.SIGUSR1)\nos.kill(os.getpid(), signal.SIGTERM)\n"
            "print('still here')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0 and "still here" in done.stdout
    assert signal.SIGUSR1 not in signal.sigpending()


def test_kill_9_at_a_random_step_then_resume_is_exact(corpus_dir, tmp_path, kill_9_and_resume):
    def command(name, *extra):
        return [sys.executable, "-m", "lm.train", "--config", "lm/configs/demo.yaml", f"data.dir={corpus_dir}",
                f"run.root={tmp_path}", f"run.name={name}", *TINY, "train.epochs=2", *extra]
    kill_9_and_resume(command, tmp_path / "lm", seed=1)


def test_time_budget_stops_mid_epoch_unfinished_and_a_larger_budget_continues_exactly(corpus_dir, tmp_path, capsys):
    """train.max_minutes: the partial epoch counts as a fraction, the run is not FINISHED, the same
    budget does nothing more, and a larger one continues exactly where it stopped."""
    straight = train(corpus_dir, tmp_path, "straight", "train.epochs=2")
    budget = train(corpus_dir, tmp_path, "budget", "train.epochs=2", "train.max_minutes=0.0001")
    summary = json.loads((budget / "summary.json").read_text())
    assert summary["status"] == "budget" and 0 < summary["epochs"] < 1 and not (budget / "FINISHED").exists()
    assert summary["metrics"]["valid_ppl"] > 0  # the partial epoch was evaluated
    capsys.readouterr()
    train(corpus_dir, tmp_path, "budget", "train.epochs=2", "train.max_minutes=0.0001", "--resume")
    assert "is already spent" in capsys.readouterr().out
    train(corpus_dir, tmp_path, "budget", "train.epochs=2", "train.max_minutes=0", "--resume")
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in epoch_lines] == ["epoch 1", "epoch 2"]  # whole epochs: integers
    assert (budget / "FINISHED").exists() and json.loads((budget / "summary.json").read_text())["epochs"] == 2
    final = [load_checkpoint(sorted((run / "checkpoints").glob("step-*.pt"))[-1]) for run in (straight, budget)]
    assert final[0]["step"] == final[1]["step"]
    for key, value in final[0]["model"].items():
        assert torch.equal(value, final[1]["model"][key]), key


def test_an_early_stopped_run_killed_before_its_summary_does_not_train_on(corpus_dir, tmp_path, monkeypatch):
    # a constant valid perplexity: with patience 1, early stopping ends the 5-epoch run after epoch 2
    monkeypatch.setattr(lm.train, "perplexity", lambda nll, count: 10.0)
    run_dir = train(corpus_dir, tmp_path, "stopped", "train.epochs=5", "train.early_stop_patience=1")
    stopped = load_checkpoint(sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1])
    assert stopped["epoch"] == 2
    # killed in the window between the last checkpoint and summary.json / FINISHED
    (run_dir / "FINISHED").unlink()
    (run_dir / "summary.json").unlink()
    train(corpus_dir, tmp_path, "stopped", "train.epochs=5", "train.early_stop_patience=1", resume="latest")
    assert (run_dir / "FINISHED").is_file() and json.loads((run_dir / "summary.json").read_text())["epochs"] == 2
    assert load_checkpoint(sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1])["step"] == stopped["step"]
