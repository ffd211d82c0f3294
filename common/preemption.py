"""Preemption: SIGUSR1 (Slurm's warning before the time limit) and SIGTERM (scancel, requeue,
node shutdown) set a flag; the training loop checkpoints at the next step boundary and exits with
EXIT_PREEMPTED, which the Slurm templates take as "requeue me and resume"."""
from __future__ import annotations

import signal
import sys

# sysexits.h EX_TEMPFAIL: "temporary failure, try again later". Documented in slurm/README.md.
EXIT_PREEMPTED = 75


class PreemptionFlag:
    """`if flag.requested: save(); flag.exit()`. Installing it replaces the default handlers."""

    def __init__(self, signals=(signal.SIGUSR1, signal.SIGTERM)):
        self.requested = False
        self.signal_name = ""
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def exit(self, checkpoint_path=None) -> None:
        where = f"; checkpoint {checkpoint_path}" if checkpoint_path else ""
        print(f"preempted by {self.signal_name}{where}; exiting with code {EXIT_PREEMPTED} "
              f"(rerun with --resume to continue)", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)


def any_rank_requested(flag: PreemptionFlag, device=None) -> bool:
    """Under DDP a signal may reach one rank only; all ranks must stop at the same step."""
    import torch
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return flag.requested
    t = torch.tensor([1.0 if flag.requested else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
