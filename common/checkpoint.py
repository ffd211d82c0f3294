"""Atomic checkpoints with keep-last-N, best, and fallback past a corrupt file.

Layout inside a run folder:  checkpoints/step-00001234.pt (the newest `keep_last`)  and  best.pt.
A checkpoint is one dict; by convention it holds model, optimizer, scheduler, scaler, epoch, step,
step_in_epoch (position in the epoch's data order), best_metric and rng (common.seeding.rng_state()).
"""
from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

_STEP_FILE = re.compile(r"step-(\d+)\.pt$")


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`:
    a crash mid-write leaves the previous file intact, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            from common.config import ConfigError
            raise ConfigError(f"no space left on device while writing {path}; the previous checkpoint is "
                              f"intact: free some space, then rerun with --resume") from None
        raise


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    # weights_only=False: our checkpoints hold RNG states (numpy tuples) besides tensors.
    return torch.load(path, map_location=map_location, weights_only=False)


class Checkpointer:
    """Saves step checkpoints (keeping the newest `keep_last`) and best.pt; only the main rank writes."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2, is_main: bool = True):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, keep_last)
        self.is_main = is_main
        if is_main and self.dir.is_dir():  # left by a process killed mid-write
            for stale in self.dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def step_checkpoints(self) -> list[Path]:
        """Step checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _STEP_FILE.search(p.name))]
        return [p for _, p in sorted(found)]

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def save(self, state: dict, step: int, is_best: bool = False) -> Path | None:
        if not self.is_main:
            return None
        path = self.dir / f"step-{step:08d}.pt"
        atomic_save(state, path)
        if is_best:
            atomic_save(state, self.best_path)
        for old in self.step_checkpoints()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location="cpu") -> tuple[dict, Path] | None:
        """The newest readable step checkpoint; a corrupt or truncated one is reported and the
        previous one is used. None when there is no checkpoint at all."""
        candidates = self.step_checkpoints()
        unreadable = []
        for path in reversed(candidates):
            try:
                state = load_checkpoint(path, map_location)
            except Exception as err:  # truncated zip, bad pickle, ...: fall back to the older one
                unreadable.append(f"{path} is unreadable ({type(err).__name__}: {err})")
                continue
            for what in unreadable:
                print(f"warning: checkpoint {what}; using the previous one", file=sys.stderr)
            return state, path
        if candidates:
            from common.config import ConfigError
            try:
                best = load_checkpoint(self.best_path, "cpu")
            except Exception:
                raise ConfigError(f"all {len(candidates)} step checkpoints in {self.dir} and best.pt are "
                                  f"unreadable: nothing can be resumed; start a new run (run.name=...)") from None
            raise ConfigError(f"all {len(candidates)} step checkpoints in {self.dir} are unreadable, but best.pt "
                              f"(step {best.get('step')}, epoch {best.get('epoch')}) is fine: evaluate it, or "
                              f"continue from it with --resume {self.best_path} (the steps after it are lost)")
        return None


def _unwrap(model):
    """The bare module behind DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def training_state(model, optimizer, scheduler=None, scaler=None, **counters) -> dict:
    """Everything needed to continue bit for bit: weights, optimizer, scheduler, grad scaler,
    RNG states, and the caller's counters (epoch, step, step_in_epoch, best_metric, ...)."""
    from common.seeding import rng_state
    rng = rng_state()
    return {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng, "rng_per_rank": _gather_from_ranks(rng), **counters}


def _gather_from_ranks(obj) -> list | None:
    """Every rank's `obj` (a collective: all ranks call it), None when not distributed. Under DDP
    each rank draws its own noise (dropout, augmentation, sampling), so each needs its own RNG state
    back on resume: rank 0's alone would make the other ranks continue differently."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return None
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def restore_training_state(state: dict, model, optimizer, scheduler=None, scaler=None) -> dict:
    """Load a `training_state` dict in place; returns the counters. Call it after building the
    model and data, right before the loop, so the restored RNG state is the one the loop sees."""
    from common.seeding import set_rng_state
    try:
        _unwrap(model).load_state_dict(state["model"])
    except RuntimeError as err:  # size mismatch, missing or unexpected keys: another architecture
        from common.config import ConfigError
        from common.run import RESUME_CHANGES
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        changed = "; ".join(RESUME_CHANGES) or "none found in config.yaml"
        raise ConfigError(f"--resume: the checkpoint holds another architecture ({detail}); settings changed "
                          f"since the run started: {changed}. Resume with the run's own settings, or start a "
                          f"new run (run.name=...)") from None
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(_this_ranks_rng(state))
    skip = {"model", "optimizer", "scheduler", "scaler", "rng", "rng_per_rank"}
    return {k: v for k, v in state.items() if k not in skip}


def _this_ranks_rng(state: dict) -> dict:
    import torch.distributed as dist
    per_rank = state.get("rng_per_rank")
    if not (dist.is_available() and dist.is_initialized()):
        return state["rng"]
    if per_rank is None or len(per_rank) != dist.get_world_size():
        if dist.get_rank() == 0:
            print(f"warning: the checkpoint was written by {len(per_rank or [0])} process(es), this run has "
                  f"{dist.get_world_size()}: every rank continues from rank 0's random state", file=sys.stderr)
        return state["rng"]
    return per_rank[dist.get_rank()]


def load_for_resume(checkpointer: Checkpointer, resume: str | None, map_location="cpu") -> dict | None:
    """`--resume` (latest of the run folder) or `--resume PATH`; None for a fresh start.
    `--resume` on a run without checkpoints starts fresh, so a Slurm job can always pass it."""
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not path.is_file():
            from common.config import ConfigError
            raise ConfigError(f"--resume {path}: no such checkpoint file")
        print(f"resuming from {path}")
        return load_checkpoint(path, map_location)
    found = checkpointer.load_latest(map_location)
    if found is None:
        print(f"--resume: no checkpoint in {checkpointer.dir} yet; starting from scratch")
        return None
    state, path = found
    print(f"resuming from {path}")
    return state


def find_checkpoint(path: str | Path, project: str) -> tuple[Path, Path]:
    """(run folder, checkpoint file) for evaluation: from a checkpoint file, or from a run folder
    (its best.pt, else its newest step checkpoint). Says so when the run has not finished."""
    from common.config import ConfigError
    from common.run import is_finished
    path = Path(path)
    if path.is_file():
        run_dir, found = (path.parent.parent if path.parent.name == "checkpoints" else path.parent), path
    elif not path.is_dir():
        raise ConfigError(f"{path} is neither a run folder nor a checkpoint file (give runs/{project}/<run name> "
                          f"or a .pt file)")
    else:
        run_dir, checkpointer = path, Checkpointer(path, is_main=False)
        steps = checkpointer.step_checkpoints()
        if checkpointer.best_path.is_file():
            found = checkpointer.best_path
        elif steps:
            found = steps[-1]
        else:
            raise ConfigError(f"no checkpoint in {checkpointer.dir}; train first with python -m {project}.train")
    if (run_dir / "config.yaml").is_file() and not is_finished(run_dir):
        newest = Checkpointer(run_dir, is_main=False).step_checkpoints()
        print(f"note: {run_dir} has not finished training (no FINISHED file; newest checkpoint "
              f"{newest[-1].name if newest else 'none'}); evaluating {found.name} as it is")
    return run_dir, found
