"""Per-step training statistics kept on the device, and the guard against divergence.

    monitor = TrainMonitor(device, ("loss",), checkpointer, run_dir)
    monitor.add(step, loss=loss)                    # every step: no GPU sync, no collective
    tb.log(step, monitor.interval_means())          # every log_every_steps: one reduce over ranks
    save(..., monitor=monitor.state_dict())         # after monitor.sync() (the save helper does it)
    epoch_metrics = monitor.epoch_means()           # before validation

Every read reduces the sums over the DDP ranks once and checks that every loss (and gradient norm,
when given) since the previous read was finite. A diverged run stops there with one line (the step,
the value, the last good checkpoint, a hint) and EXIT_DIVERGED, which the Slurm templates do not
requeue. Since every checkpoint is written right after such a check, the last checkpoint always
holds finite weights. Under fp16 loss scaling a non-finite gradient norm is the scaler's business
(it skips that step and lowers the scale), not divergence. A loss that stays finite but explodes
(a mean above EXPLODED times its value at the first step, e.g. cross-entropy 3.7e7 after a learning rate of
1e6) is divergence too.
"""
from __future__ import annotations

import math
import sys

import torch
import torch.distributed as dist

# Neither 0 (finished) nor 75 (preempted: requeue); 2 is a config error. Documented in slurm/README.md.
EXIT_DIVERGED = 3
EXPLODED = 1e3  # times the first step's value of names[0] (at least 1): no training recovers from that


class TrainMonitor:
    def __init__(self, device: torch.device, names: tuple[str, ...], checkpointer=None, run_dir=None,
                 fp16_scaler: bool = False):
        self.names = tuple(names)
        self.device = device
        self.checkpointer = checkpointer
        self.run_dir = run_dir
        # a non-finite gradient norm under fp16 loss scaling is a skipped step, not divergence
        self.exempt = torch.tensor([fp16_scaler and name == "grad_norm" for name in self.names], device=device)
        # [sum of each name..., number of steps]: since the last interval read, and this epoch
        self.interval = torch.zeros(len(self.names) + 1, dtype=torch.float64, device=device)
        self.epoch = torch.zeros_like(self.interval)
        # first non-finite value seen since the last check: [count, step, value]
        self.bad = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64, device=device)
        # names[0] at the very first step (the model as initialised), mean over ranks: the reference
        # of the explosion check
        self.first_step_value: torch.Tensor | None = None
        self.first_mean: float | None = None

    def add(self, step: int, **values: torch.Tensor) -> None:
        """Accumulate one step's values (0-dim tensors on the device) without reading them."""
        row = torch.stack([values[name].detach().double().reshape(()) for name in self.names])
        finite = torch.isfinite(row)
        is_bad = ~(finite | self.exempt).all()
        first_bad = is_bad & (self.bad[0] == 0)
        bad_value = row[~(finite | self.exempt)].sum()  # nan or inf; only recorded when there is one
        self.bad = torch.stack([self.bad[0] + is_bad.double(),
                                torch.where(first_bad, self.bad.new_tensor(float(step)), self.bad[1]),
                                torch.where(first_bad, bad_value, self.bad[2])])
        # a non-finite value (a skipped fp16 step) must not poison the running means
        row = torch.cat([torch.where(finite, row, torch.zeros_like(row)), row.new_ones(1)])
        self.interval += row
        self.epoch += row
        if self.first_step_value is None:
            self.first_step_value = row[0].clone()

    def sync(self) -> None:
        """Reduce over ranks, check for non-finite values (exit on divergence), and leave every rank
        an equal share of the global sums, so rank 0's checkpoint resumes every rank exactly enough."""
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            # on the CPU (gloo): it is read right after anyway, and a rank that waits here while rank 0
            # validates is bound by gloo's 30-minute timeout, not NCCL's 10 minutes
            first = self.first_step_value if self.first_step_value is not None else self.bad.new_zeros(())
            packed = torch.cat([self.interval, self.epoch, first.reshape(1), self.bad[:1]]).cpu()
            dist.all_reduce(packed)
            sums = (packed[:-2] / world).to(self.device)
            if self.first_step_value is not None:
                self.first_step_value = (packed[-2] / world).to(self.device)
            self.interval, self.epoch = sums[:len(self.interval)], sums[len(self.interval):]
            if packed[-1] > 0:
                # the first bad step over all ranks (rare path: a second collective is fine)
                step = torch.where(self.bad[1] >= 0, self.bad[1], self.bad.new_tensor(math.inf))
                first = torch.stack([step, self.bad[2]]).cpu()
                gathered = [torch.zeros_like(first) for _ in range(world)]
                dist.all_gather(gathered, first)
                step, value = min((tuple(t.tolist()) for t in gathered), key=lambda sv: sv[0])
                self.bad = self.bad.new_tensor([packed[-1].item(), step, value])
        count, step, value = self.bad.tolist()
        if count > 0:
            self._stop(f"non-finite loss or gradient norm ({value}) at step {int(step)} ({int(count)} such "
                       f"step{'s' if count > 1 else ''} since the last check)")
        if self.first_mean is None and self.first_step_value is not None:
            self.first_mean = self.first_step_value.item()

    def _stop(self, what: str) -> None:
        """One line (main rank), status "diverged" in summary.json, exit EXIT_DIVERGED on every rank."""
        is_main = self.checkpointer is None or self.checkpointer.is_main
        found = self.checkpointer.step_checkpoints() if self.checkpointer is not None else []
        last = str(found[-1]) if found else None
        if self.run_dir is not None and is_main:
            from common.run import update_summary
            update_summary(self.run_dir, status="diverged", diverged={"reason": what, "last_checkpoint": last})
        if is_main:
            print(f"error: training diverged: {what}; last good checkpoint: {last or 'none'}. Lower train.lr, "
                  f"enable gradient clipping (train.grad_clip / train.clip) or a warmup, then start a new run "
                  f"or --resume {last or ''}".rstrip(), file=sys.stderr, flush=True)
        sys.exit(EXIT_DIVERGED)

    def check_finite(self, step: int, what: str, value: float) -> None:
        """Validation of weights that the last update made non-finite (its training loss was still
        finite). Every rank must call it with the same value."""
        if not math.isfinite(value):
            self._stop(f"non-finite {what} ({value}) at step {step}, after the last update")

    def _means(self, sums: torch.Tensor, step: int) -> dict[str, float]:
        values = sums.tolist()
        steps = max(values[-1], 1.0)
        means = {name: total / steps for name, total in zip(self.names, values)}
        current = means[self.names[0]]
        if values[-1] > 0 and self.first_mean is not None and current > EXPLODED * max(abs(self.first_mean), 1.0):
            self._stop(f"{self.names[0]} exploded to a mean of {current:.4g} over the steps up to step {step}, "
                       f"from {self.first_mean:.4g} at the first step")
        return means

    def interval_means(self, step: int) -> dict[str, float]:
        """Means since the previous interval read, over all ranks; starts a new interval."""
        self.sync()
        means = self._means(self.interval, step)
        self.interval.zero_()
        return means

    def epoch_means(self, step: int) -> dict[str, float]:
        """Means over the epoch so far (a resumed epoch included), over all ranks; starts a new epoch."""
        self.sync()
        means = self._means(self.epoch, step)
        self.interval.zero_()
        self.epoch.zero_()
        return means

    def state_dict(self) -> dict:
        """Call after sync() (the sums are then the same on every rank)."""
        return {"names": self.names, "interval": self.interval.cpu(), "epoch": self.epoch.cpu(),
                "first_mean": self.first_mean}

    def load_state_dict(self, state: dict) -> None:
        self.interval = state["interval"].to(self.device)
        self.epoch = state["epoch"].to(self.device)
        self.first_mean = state["first_mean"]
        if self.first_mean is not None:
            self.first_step_value = torch.tensor(self.first_mean, dtype=torch.float64, device=self.device)
