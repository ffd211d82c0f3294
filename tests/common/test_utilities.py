import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from common.checkpoint import Checkpointer, atomic_save, load_for_resume
from common.config import REPO_ROOT, ConfigError, RunConfig
from common.device import amp_dtype, autocast, grad_scaler, pick_device
from common.distributed import ResumableSampler, setup_distributed
from common.log import epoch_line
from common.params import check_parameter_budget, count_parameters
from common.run import is_finished, mark_finished, prepare_run_dir, read_summary, write_summary
from common.seeding import rng_state, seed_everything, set_rng_state


def test_atomic_save_leaves_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_checkpointer_keeps_last_n_and_best(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        ckpt.save({"step": step}, step, is_best=step == 2)
    assert [p.name for p in ckpt.step_checkpoints()] == ["step-00000002.pt", "step-00000003.pt"]
    assert torch.load(ckpt.best_path)["step"] == 2
    state, path = ckpt.load_latest()
    assert state["step"] == 3 and path.name == "step-00000003.pt"


def test_checkpointer_skips_corrupt_newest_with_a_warning(tmp_path, capsys):
    ckpt = Checkpointer(tmp_path, keep_last=3)
    ckpt.save({"step": 1}, 1)
    newest = ckpt.save({"step": 2}, 2)
    newest.write_bytes(b"not a checkpoint")
    state, path = ckpt.load_latest()
    assert state["step"] == 1
    assert f"warning: checkpoint {newest} is unreadable" in capsys.readouterr().err
    ckpt.step_checkpoints()[0].write_bytes(b"")
    with pytest.raises(ConfigError, match="all 2 step checkpoints .* and best.pt are unreadable: nothing can be"):
        ckpt.load_latest()


def test_non_main_rank_writes_nothing(tmp_path):
    assert Checkpointer(tmp_path, is_main=False).save({"step": 1}, 1, is_best=True) is None
    assert not (tmp_path / "checkpoints").exists()


def test_resume_argument_forms(tmp_path, capsys):
    ckpt = Checkpointer(tmp_path)
    assert load_for_resume(ckpt, None) is None
    assert load_for_resume(ckpt, "latest") is None
    assert "starting from scratch" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        load_for_resume(ckpt, str(tmp_path / "nope.pt"))
    path = ckpt.save({"step": 5}, 5)
    assert load_for_resume(ckpt, str(path))["step"] == 5
    assert load_for_resume(ckpt, "latest")["step"] == 5


def test_rng_state_round_trip():
    seed_everything(3)
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_sampler_order_depends_on_seed_and_epoch_only():
    a = ResumableSampler(50, seed=1)
    a.set_epoch(3)
    torch.rand(10)  # the global RNG must not matter
    b = ResumableSampler(50, seed=1)
    b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(4)
    assert list(a) != list(b)
    full = list(a)
    a.set_epoch(3, start=20)
    assert list(a) == full[20:] and len(a) == 30


@pytest.mark.parametrize("drop_last", [True, False])
def test_sampler_shards_cover_the_epoch(drop_last):
    shards = [ResumableSampler(11, seed=0, rank=r, world_size=3, drop_last=drop_last) for r in range(3)]
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1 and lengths == {len(list(shards[0]))}
    union = set().union(*(set(s) for s in shards))
    assert len(union) == (9 if drop_last else 11)


def test_parameter_budget():
    model = nn.Linear(10, 10)  # 110 parameters
    assert count_parameters(model) == 110
    tied = nn.ModuleDict({"a": model, "b": model})
    assert count_parameters(tied) == 110  # shared weights counted once
    assert check_parameter_budget(model, 110, "lm") == 110
    with pytest.raises(ConfigError, match="lm has 110 parameters, over the 100 limit by 10"):
        check_parameter_budget(model, 100, "lm")


def test_device_and_amp_on_cpu():
    device = pick_device("cpu")
    assert device.type == "cpu" and amp_dtype(device) is None
    assert not grad_scaler(device, None).is_enabled()
    with autocast(device, None):
        assert torch.ones(1).dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            pick_device("cuda")


def test_single_process_without_launcher(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    info = setup_distributed()
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)


def test_run_folder_records_config_and_version(tmp_path):
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        lr: float = 0.1
        run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(name="r1", root=str(tmp_path)))
    cfg = Cfg()
    run_dir = prepare_run_dir("proj", cfg, torch.device("cpu"), resume=False)
    assert run_dir == tmp_path / "proj" / "r1"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["lr"] == 0.1
    version = json.loads((run_dir / "version.json").read_text())
    assert set(version["git"]) == {"commit", "dirty"} and version["environment"]["torch"] == torch.__version__
    Checkpointer(run_dir).save({"step": 1}, 1)
    with pytest.raises(ConfigError, match="already has checkpoints; pass --resume"):
        prepare_run_dir("proj", cfg, torch.device("cpu"), resume=False)
    assert prepare_run_dir("proj", cfg, torch.device("cpu"), resume=True) == run_dir
    write_summary(run_dir, "m", {"acc": 0.5}, params=3)
    assert read_summary(run_dir) == {"model": "m", "status": "finished", "metrics": {"acc": 0.5}, "params": 3}
    assert not is_finished(run_dir)
    mark_finished(run_dir)
    assert is_finished(run_dir)


def test_epoch_line():
    assert epoch_line(3, {"train_loss": 4.81234, "valid_ppl": 123.44, "lr": "1e-3"}, 52.06) == \
        "epoch 3 | train_loss 4.812 | valid_ppl 123.4 | lr 1e-3 | 52.1s"


def test_module_entry_points_work_from_a_project_folder(tmp_path):
    """`cd lm && python train.py` relies on the editable install making the packages importable."""
    result = subprocess.run([sys.executable, "-c", "import common.config, sys; print(common.config.REPO_ROOT)"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == str(REPO_ROOT)


def test_env_yaml_pip_part_matches_requirements():
    env = yaml.safe_load((REPO_ROOT / "env.yaml").read_text())
    pip_part = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_part == ["-r requirements.txt", "-e ."]
    assert "python=3.11" in env["dependencies"] and any(str(d).startswith("openjdk") for d in env["dependencies"])
    pins = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    pins = [p for p in pins if p]
    assert all("==" in p for p in pins), "every requirement is an exact pin"
    names = {p.split("==")[0].lower() for p in pins}
    assert {"torch", "torchvision", "torchaudio", "numpy", "lhotse", "lilcom", "sed_eval", "dcase_util"} <= names
    from importlib.metadata import version
    for pin in pins:
        name, wanted = pin.split("==")
        assert version(name) == wanted, f"installed {name} {version(name)} differs from the pin {wanted}"


def test_find_checkpoint_prefers_best_then_newest_step(tmp_path):
    from common.checkpoint import find_checkpoint
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"neither a run folder nor a checkpoint file \(give runs/lm/<run name>"):
        find_checkpoint(run_dir, "lm")
    run_dir.mkdir()
    with pytest.raises(ConfigError, match="no checkpoint in .*; train first with python -m lm.train"):
        find_checkpoint(run_dir, "lm")
    ckpt = Checkpointer(run_dir)
    ckpt.save({"step": 1}, 1)
    newest = ckpt.save({"step": 2}, 2)
    assert find_checkpoint(run_dir, "lm") == (run_dir, newest)
    ckpt.save({"step": 3}, 3, is_best=True)
    assert find_checkpoint(run_dir, "lm") == (run_dir, ckpt.best_path)
    assert find_checkpoint(ckpt.best_path, "lm") == (run_dir, ckpt.best_path)


def test_preemption_signal_waits_pending_until_polled():
    import signal
    import threading

    from common.preemption import PreemptionFlag
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        flag = PreemptionFlag()
        assert not flag.requested
        # to the main thread (os.kill may pick a thread an earlier test started): blocked, it stays
        # pending and no handler runs mid-step
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        assert signal.SIGUSR1 in signal.sigpending()
        assert flag.requested and flag.signal_name == "SIGUSR1"
        assert signal.SIGUSR1 not in signal.sigpending()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)


SIGNAL_STATE_OF_A_CHILD = """
import signal, subprocess, sys
from common.preemption import PreemptionFlag
flag = PreemptionFlag()
if sys.argv[1] == "finished":
    flag.finish()
status = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True).stdout
fields = dict(line.split(":\\t", 1) for line in status.splitlines() if ":\\t" in line)
print(" ".join(name for name, field in (("blocked", "SigBlk"), ("ignored", "SigIgn"))
               if int(fields[field], 16) & (1 << (signal.SIGTERM - 1))))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads a child's signal masks in /proc")
def test_a_process_started_after_training_can_be_terminated():
    """The flag blocks SIGTERM and finish() must not ignore it: both are inherited by every child, even
    across exec, so a worker pool started for evaluation could not be terminated (Pool.terminate hung)."""
    def child_sigterm_state(phase):
        return subprocess.run([sys.executable, "-c", SIGNAL_STATE_OF_A_CHILD, phase], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=60, check=True).stdout.split()
    assert child_sigterm_state("training") == ["blocked"]  # kept pending for the step boundary, by design
    assert child_sigterm_state("finished") == []
