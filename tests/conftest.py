"""Shared test settings: no model hub access, the location of the real data (CI has it), and a
watchdog that ends a hung test run."""
import faulthandler
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny test models run several times faster on one thread (threads of a small op mostly wait for
# each other, the more so on a busy CPU); subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402  (after the variable, so torch starts with one thread)

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEST_TIMEOUT_S = 600  # the slowest test (tests/slurm) takes 2-4 minutes


@pytest.fixture(autouse=True)
def hang_watchdog():
    """A test that hangs (a worker pool that cannot end, a stuck collective) stops the whole run with
    every thread's traceback after TEST_TIMEOUT_S, instead of silently eating CI's time limit (that
    happened: 90 minutes, no output)."""
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a skip that says why (a user's clone has no shared folder)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only the course machines and CI have it)")
    return SHARED_DATA


@pytest.fixture
def fake_project():
    """fake_project(code_dir, name, {relative path: text}) -> the folder of a stand-in project package
    (train.py, evaluate.py, ...) under code_dir, for tests of the scripts that run a project by name."""
    def write(code_dir: Path, name: str, files: dict[str, str]) -> Path:
        package = code_dir / name
        for relative, text in {"__init__.py": "", **files}.items():
            (package / relative).parent.mkdir(parents=True, exist_ok=True)
            (package / relative).write_text(text)
        return package
    return write


@pytest.fixture
def launch_ranks():
    """start(command, world_size=2) -> one Popen per rank, with the variables torchrun would set
    (gloo on CPU, a free localhost port)."""
    import socket
    import subprocess

    def start(command: list[str], world_size: int = 2) -> list[subprocess.Popen]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1", "RANK": str(rank),
                                      "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                                      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
                for rank in range(world_size)]
    return start


@pytest.fixture
def run_two_ranks(launch_ranks):
    """run_two_ranks(command, preempt=False) -> (exit codes, [(stdout, stderr)] per rank). With
    `preempt`, rank 1 alone gets SIGUSR1 once it has printed its first line (its PreemptionFlag is
    installed by then): both ranks must checkpoint at the next step boundary and exit 75."""
    import signal

    def run(command: list[str], preempt: bool = False, timeout: float = 300):
        procs = launch_ranks(command)
        if preempt:
            first_line = procs[1].stdout.readline()
            assert first_line, "rank 1 printed nothing before it ended: " + procs[1].communicate()[1][-2000:]
            procs[1].send_signal(signal.SIGUSR1)
        outputs = [p.communicate(timeout=timeout) for p in procs]
        return [p.returncode for p in procs], outputs
    return run


@pytest.fixture
def check_rank0_run_folder():
    """check(run_dir, launches, done_files) -> the newest step checkpoint, after asserting that rank 0
    alone wrote the folder: one tensorboard event file per launch (not per rank), config.yaml,
    version.json and `done_files` present."""
    def check(run_dir: Path, launches: int, done_files=("FINISHED", "summary.json")) -> dict:
        for name in ("config.yaml", "version.json", *done_files):
            assert (run_dir / name).is_file(), f"{run_dir}: no {name}"
        assert len(list((run_dir / "tb").glob("events.*"))) == launches
        steps = sorted((run_dir / "checkpoints").glob("step-*.pt"))
        assert steps, f"{run_dir}: no step checkpoint"
        return torch.load(steps[-1], weights_only=False)
    return check


@pytest.fixture
def expect_divergence(capsys):
    """expect_divergence(train_call, run_dir): the call must stop with EXIT_DIVERGED and one error
    line, and leave a strict-JSON summary.json with status "diverged"."""
    import json

    from common.monitor import EXIT_DIVERGED

    def check(train_call, run_dir: Path) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            train_call()
        err = capsys.readouterr().err
        assert stopped.value.code == EXIT_DIVERGED, err[-2000:]
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "diverged" in lines[0] and "train.lr" in lines[0], err[-2000:]
        text = (run_dir / "summary.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        assert json.loads(text)["status"] == "diverged"
        assert not (run_dir / "FINISHED").exists()
        return lines[0]
    return check


@pytest.fixture
def two_rank_preempted_run(run_two_ranks, check_rank0_run_folder):
    """run(command, runs, done_files) -> (final checkpoint of "straight", of "ddp"): `command(name,
    *extra)` is a train.py argv and `runs` the project's folder under run.root. "straight" runs two
    ranks uninterrupted; "ddp" runs two ranks, is preempted through rank 1 (both ranks exit 75 with a
    mid-run checkpoint that rank 0 alone wrote), then resumes with --resume to the end."""
    from common.preemption import EXIT_PREEMPTED

    def run(command, runs: Path, done_files=("FINISHED", "summary.json")) -> tuple[dict, dict]:
        def launch(name, *extra, preempt=False, expected=0):
            codes, outputs = run_two_ranks(command(name, *extra), preempt=preempt)
            assert codes == [expected] * 2, outputs[0][1][-2000:] + outputs[1][1][-2000:]
        launch("straight")
        straight = check_rank0_run_folder(runs / "straight", launches=1, done_files=done_files)
        launch("ddp", preempt=True, expected=EXIT_PREEMPTED)
        assert 0 < check_rank0_run_folder(runs / "ddp", launches=1, done_files=())["step"] < straight["step"]
        launch("ddp", "--resume")
        resumed = check_rank0_run_folder(runs / "ddp", launches=2, done_files=done_files)
        assert resumed["step"] == straight["step"]
        return straight, resumed
    return run


@pytest.fixture
def check_fp32_finite_gradients():
    """check(named_parameters): every parameter got a gradient, in fp32 and finite (the mixed
    precision tests: autocast computes in half precision, the weights and their gradients stay fp32)."""
    def check(named_parameters) -> None:
        for name, param in named_parameters:
            assert param.grad is not None, f"{name} got no gradient"
            assert param.grad.dtype == torch.float32, name
            assert torch.isfinite(param.grad).all(), name
    return check


@pytest.fixture
def kill_9_and_resume():
    """run(command, run_dir, seed) with `command(name, *extra)` a train.py argv: trains "straight"
    uninterrupted, then "killed" with `kill -9` as soon as it has checkpointed a step drawn from
    `seed` (a checkpoint every step, so the kill lands mid-step or mid-write), then `--resume` to the
    end. Asserts the same final weights and summary metrics; returns the killed step."""
    import json
    import random
    import re
    import signal
    import subprocess
    import time

    def finish(argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    def final(run_dir: Path) -> dict:
        return torch.load(sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1], weights_only=False)

    def run(command, runs: Path, seed: int, summary: str = "summary.json") -> int:
        every_step = ("run.checkpoint_every_steps=1",)
        finish(command("straight", *every_step))
        total = final(runs / "straight")["step"]
        kill_at = random.Random(seed).randint(1, max(1, total - 1))
        proc = subprocess.Popen(command("killed", *every_step), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        step_file = re.compile(r"step-(\d+)\.pt$")
        while proc.poll() is None:
            found = [int(m.group(1)) for p in (runs / "killed" / "checkpoints").glob("step-*.pt")
                     if (m := step_file.search(p.name))] if (runs / "killed" / "checkpoints").is_dir() else []
            if found and max(found) >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        assert proc.wait(timeout=300) == -signal.SIGKILL, "the run ended before the kill"
        finish(command("killed", *every_step, "--resume"))
        straight, resumed = final(runs / "straight"), final(runs / "killed")
        assert resumed["step"] == straight["step"]
        for name, value in straight["model"].items():
            assert torch.equal(resumed["model"][name], value), name
        records = [json.loads((runs / name / summary).read_text()) for name in ("straight", "killed")]
        key = "metrics" if summary == "summary.json" else "valid"  # valle_tts: train_log.json
        assert records[0][key] == records[1][key]
        return kill_at
    return run
