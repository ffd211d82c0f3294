"""Run-folder integrity on the real lm pipeline (issue 13): a finished run is never rewritten, a
resume into another architecture or from unreadable checkpoints is one line, evaluation says when a
run is unfinished, stale temporary files go, a full disk is one line and loses nothing, a sweep point
trained with other settings is reported rather than relabelled, and a late signal keeps exit 0."""
import errno
import os
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
from lm.synthetic import write_corpus

TINY = ["model.emb_dim=16", "model.hidden=24", "train.batch_size=4", "train.bptt=10", "train.eval_batch_size=2",
        "train.log_every_steps=5", "train.epochs=2"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    write_corpus(folder, train_tokens=1200, eval_tokens=300, vocab_size=12)
    return folder


def train(corpus_dir, root, name, *extra):
    lm.train.main(["--config", "lm/configs/demo.yaml", f"data.dir={corpus_dir}", f"run.root={root}",
                   f"run.name={name}", *TINY, *extra])
    return root / "lm" / name


def one_error_line(capsys, call) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        call()
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_resume_of_a_finished_run_leaves_it_untouched_and_sweep_reports_the_mismatch(corpus_dir, tmp_path, capsys):
    run_dir = train(corpus_dir, tmp_path, "done")
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "version.json", "summary.json")}
    train(corpus_dir, tmp_path, "done", "model.hidden=32", "--resume")
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
    line = one_error_line(capsys, lambda: train(corpus_dir, tmp_path, "full", "run.checkpoint_every_steps=5"))
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
