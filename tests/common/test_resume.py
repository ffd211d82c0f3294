"""End-to-end: exact continuation after kill -9, after SIGUSR1 preemption, past a corrupt
checkpoint, and 2-process gloo DDP — all on the toy loop in toy_train.py (the pattern every
train.py follows)."""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.preemption import EXIT_PREEMPTED

TOY = Path(__file__).with_name("toy_train.py")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def toy_command(root, name, *extra):
    return [sys.executable, str(TOY), f"run.root={root}", f"run.name={name}", *extra]


def run_toy(root, name, *extra, env=ENV):
    result = subprocess.run(toy_command(root, name, *extra), capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result


def start_and_stop_at(root, name, stop_step, sig, *extra):
    """Start the toy, wait until it prints `step stop_step`, then send `sig`; returns the exit code."""
    proc = subprocess.Popen(toy_command(root, name, "step_sleep_s=0.03", *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    for line in proc.stdout:
        if line.startswith(f"step {stop_step} "):
            proc.send_signal(sig)
            break
    proc.stdout.read()
    stderr = proc.stderr.read()
    return proc.wait(), stderr


def final_weights(root, name):
    return torch.load(Path(root) / "toy" / name / "final_weights.pt")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_toy(root, "straight")
    return root, final_weights(root, "straight")


def test_kill_9_at_random_step_then_resume_is_bit_exact(reference, tmp_path):
    _, expected = reference
    stop_step = random.Random().randint(3, 33)  # the toy runs 36 steps
    print(f"kill -9 at step {stop_step}")
    code, _ = start_and_stop_at(tmp_path, "killed", stop_step, signal.SIGKILL, "run.checkpoint_every_steps=2")
    assert code == -signal.SIGKILL
    run_toy(tmp_path, "killed", "--resume")
    assert_same_weights(final_weights(tmp_path, "killed"), expected)


def test_sigusr1_checkpoints_exits_75_and_resumes_exactly(reference, tmp_path):
    _, expected = reference
    code, stderr = start_and_stop_at(tmp_path, "preempted", 17, signal.SIGUSR1)
    assert code == EXIT_PREEMPTED == 75
    assert "preempted by SIGUSR1" in stderr
    ckpts = sorted((tmp_path / "toy" / "preempted" / "checkpoints").glob("step-*.pt"))
    saved = torch.load(ckpts[-1], weights_only=False)
    assert saved["step"] >= 17 and saved["step_in_epoch"] == saved["step"] - 12 * saved["epoch"]
    run_toy(tmp_path, "preempted", "--resume")
    assert_same_weights(final_weights(tmp_path, "preempted"), expected)
    # A finished run is never restarted (what a requeued Slurm job relies on).
    again = run_toy(tmp_path, "preempted", "--resume")
    assert "already finished" in again.stdout


def test_corrupt_latest_checkpoint_falls_back_and_stays_exact(reference, tmp_path):
    _, expected = reference
    code, _ = start_and_stop_at(tmp_path, "corrupt", 20, signal.SIGTERM, "run.checkpoint_every_steps=3")
    assert code == EXIT_PREEMPTED
    newest = sorted((tmp_path / "toy" / "corrupt" / "checkpoints").glob("step-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a full disk
    result = run_toy(tmp_path, "corrupt", "--resume")
    assert f"checkpoint {newest} is unreadable" in result.stderr
    assert_same_weights(final_weights(tmp_path, "corrupt"), expected)


def run_ranks(launch_ranks, root, name, *extra, stop_rank1_at=None):
    """Two gloo ranks; optionally SIGUSR1 to rank 1 only."""
    procs = launch_ranks(toy_command(root, name, "dropout=0", "run.device=cpu", *extra))
    out0 = procs[0].stdout
    lines = []
    for line in out0:
        lines.append(line)
        if stop_rank1_at and line.startswith(f"step {stop_rank1_at} "):
            procs[1].send_signal(signal.SIGUSR1)
            break
    lines += out0.read().splitlines(keepends=True)
    codes = [p.wait() for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    return codes, [float(line.split()[3]) for line in lines if line.startswith("step ")]


def test_ddp_two_ranks_match_one_process_and_resume(tmp_path, launch_ranks):
    single = run_toy(tmp_path, "single", "dropout=0")
    single_losses = [float(line.split()[3]) for line in single.stdout.splitlines() if line.startswith("step ")]
    codes, ddp_losses = run_ranks(launch_ranks, tmp_path, "ddp")
    assert codes == [0, 0]
    # Same global batch (8 = 2 x 4): the same trajectory up to float summation order.
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5, abs=1e-6)
    for key, value in final_weights(tmp_path, "single").items():
        assert torch.allclose(final_weights(tmp_path, "ddp")[key], value, rtol=0, atol=1e-5), key

    codes, _ = run_ranks(launch_ranks, tmp_path, "ddp_preempted", "step_sleep_s=0.03", stop_rank1_at=10)
    assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED]  # a signal to one rank stops both
    checkpoints = list((tmp_path / "toy" / "ddp_preempted" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1  # written by rank 0 only
    codes, _ = run_ranks(launch_ranks, tmp_path, "ddp_preempted", "--resume")
    assert codes == [0, 0]
    expected = final_weights(tmp_path, "ddp")
    got = final_weights(tmp_path, "ddp_preempted")
    for key in expected:
        assert torch.allclose(got[key], expected[key], rtol=0, atol=1e-6), key
