"""torch.distributed setup for torchrun and srun, and a sampler whose position resumes.

One process per GPU. torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; under
`srun` we read SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and take the first node of the allocation
as the master. Without either, everything runs as a single process (rank 0 of 1).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess

import torch
import torch.distributed as dist


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_from_slurm() -> None:
    """Fill torchrun's variables from srun's (only when srun launched one task per GPU)."""
    os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
    os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST", "localhost")
        try:
            first = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True,
                                   text=True, check=True).stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            first = nodes.split(",")[0]
        os.environ["MASTER_ADDR"] = first
    # A port derived from the job id, so two jobs sharing a node do not collide.
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def process_group_backend(use_cuda: bool) -> str:
    """NCCL reduces CUDA tensors only, and the small control collectives (a preemption flag, a
    logged mean) reduce CPU tensors: on GPU the group has both backends, so either kind works and a
    CPU collective never waits for the GPU stream."""
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def setup_distributed(device_name: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun or srun (see process_group_backend)."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 \
            and "SLURM_PROCID" in os.environ:
        _env_from_slurm()
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(use_cuda))
    return info


@contextlib.contextmanager
def main_rank_first(info: DistInfo):
    """Run the body on rank 0 first, then on the other ranks: rank 0 writes what is shared
    (generated demo data, feature caches) while the others wait, then they only read it."""
    if info.enabled and not info.is_main:
        dist.barrier()
    yield
    if info.enabled and info.is_main:
        dist.barrier()


def device_for(info: DistInfo, device: torch.device) -> torch.device:
    """Each rank's own GPU under DDP; `device` unchanged otherwise."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def cleanup_distributed() -> None:
    """Destroy the process group. Drop the DistributedDataParallel wrapper first (`del train_model`):
    if its reducer holds the last reference, the gloo group is destroyed while the GIL is held and
    joins a worker thread that waits for the GIL (torch 2.9: rank 1 hung at exit in our DDP tests)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: float) -> float:
    """Mean of a python number over ranks (the value itself when not distributed); a CPU collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


class ResumableSampler(torch.utils.data.Sampler):
    """Shuffled (or ordered) indices for one rank, reproducible from (seed, epoch) alone, that can
    start part-way through an epoch. The order never depends on the global RNG, so a resumed run
    sees exactly the samples the uninterrupted run would have seen.

        sampler.set_epoch(epoch, start=step_in_epoch * batch_size)
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False):
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start`: how many of this rank's samples of the epoch were already consumed."""
        self.epoch = epoch
        self.start = start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        if self.world_size > 1:
            if self.drop_last:
                order = order[:len(order) - len(order) % self.world_size]
            else:  # pad by wrapping so every rank gets the same number of samples
                order += order[:(-len(order)) % self.world_size]
            order = order[self.rank::self.world_size]
        return order

    def __iter__(self):
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        n = self.num_samples
        if self.world_size > 1:
            n = (n - n % self.world_size) if self.drop_last else -(-n // self.world_size) * self.world_size
            n //= self.world_size
        return max(0, n - self.start)
