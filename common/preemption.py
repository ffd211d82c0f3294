"""Preemption: SIGUSR1 (Slurm's warning before the time limit) and SIGTERM (scancel, requeue,
node shutdown) ask the training to stop; the loop checks `requested` at every step boundary,
checkpoints and exits with EXIT_PREEMPTED, which the Slurm templates take as "requeue me and
resume"."""
from __future__ import annotations

import signal
import sys

# sysexits.h EX_TEMPFAIL: "temporary failure, try again later". Documented in slurm/README.md.
EXIT_PREEMPTED = 75


def _do_nothing(signum, frame):
    pass


class PreemptionFlag:
    """`if flag.requested: save(); flag.exit()`. Create it first thing in main().

    The signals are blocked in the creating (main) thread and so in every thread it starts later:
    the kernel keeps them pending and `requested` collects them synchronously at a step boundary.
    A signal delivered asynchronously in the middle of torch's CPU kernels was seen to corrupt the
    heap (torch 2.9.1, LSTM training: about half of the runs aborted). A handler is installed as
    well, for a thread that was started before and does not block them.
    """

    def __init__(self, signals=(signal.SIGUSR1, signal.SIGTERM)):
        self.signals = set(signals)
        self._requested = False
        self.signal_name = ""
        for sig in self.signals:
            signal.signal(sig, self._handle)
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)

    def _handle(self, signum, frame):
        self._requested = True
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        pending = signal.sigpending() & self.signals
        if pending:
            info = signal.sigtimedwait(pending, 0)  # take it off the pending set
            if info is not None:
                self._handle(info.si_signo, None)
        return self._requested

    def finish(self) -> None:
        """Training is over: a signal from now on (a late Slurm warning, scancel) must neither kill the
        process nor make a finished run look preempted. A handler that does nothing takes them, the
        pending ones too once unblocked. Not SIG_IGN and not left blocked: a child inherits both, even
        across exec, and a worker pool whose workers ignore SIGTERM cannot be terminated (it hung)."""
        for sig in self.signals:
            signal.signal(sig, _do_nothing)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

    def exit(self, checkpoint_path=None) -> None:
        where = f"; checkpoint {checkpoint_path}" if checkpoint_path else ""
        print(f"preempted by {self.signal_name}{where}; exiting with code {EXIT_PREEMPTED} "
              f"(rerun with --resume to continue)", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)


def any_rank_requested(flag: PreemptionFlag) -> bool:
    """Under DDP a signal may reach one rank only; all ranks must stop at the same step. A CPU
    collective (gloo), so checking it at every step never synchronises the GPU."""
    import torch
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return flag.requested
    t = torch.tensor([1.0 if flag.requested else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
