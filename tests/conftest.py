"""Shared test settings: no model hub access, and the location of the real data (CI has it)."""
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


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a skip that says why (a user's clone has no shared folder)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only the course machines and CI have it)")
    return SHARED_DATA


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
