"""The process group on GPU must serve both the NCCL collectives of DDP (CUDA tensors) and the
small CPU collectives (preemption flag, logged means), which NCCL alone cannot reduce."""
import torch
import torch.distributed as dist

from common import distributed
from common.distributed import setup_distributed


def test_gpu_process_group_reduces_cpu_and_cuda_tensors(monkeypatch):
    seen = {}
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: seen.setdefault("device", index))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.setdefault("backend", backend))
    info = setup_distributed("auto")
    assert info.world_size == 2 and seen["device"] == 0
    backends = dict(part.split(":") for part in seen["backend"].split(","))
    assert backends == {"cpu": "gloo", "cuda": "nccl"}
    assert distributed.process_group_backend(use_cuda=False) == "gloo"
