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
