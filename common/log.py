"""Tensorboard writer (main rank only), progress bars that stay quiet when not on a terminal,
and a concise console line per epoch."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm


class TensorBoard:
    """A SummaryWriter on the main rank, a no-op elsewhere. `log(step, {"loss/train": 1.2})`."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def log(self, step: int, scalars: dict) -> None:
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def figure(self, tag: str, fig, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=False)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress(iterable=None, total=None, desc: str = "", enabled: bool = True, **kw):
    """tqdm on an interactive terminal; silent in Slurm logs, CI and pipes."""
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()), **kw)


def epoch_line(epoch: int, metrics: dict, seconds: float | None = None) -> str:
    """`epoch 3 | train_loss 4.812 | valid_ppl 123.4 | 52.1s`."""
    parts = [f"epoch {epoch}"]
    for name, value in metrics.items():
        parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
    if seconds is not None:
        parts.append(f"{seconds:.1f}s")
    return " | ".join(parts)


def mean_std(values: list[float], digits: int) -> str:
    """`0.561 ± 0.025`: mean and sample standard deviation (0 for one value) of repeated runs (seeds)."""
    import statistics
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"
