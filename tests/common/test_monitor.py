"""common.monitor: running means on the device, and the stop on a non-finite loss or gradient norm."""
import json

import pytest
import torch

from common.checkpoint import Checkpointer
from common.monitor import EXIT_DIVERGED, TrainMonitor
from common.run import write_summary


def test_interval_and_epoch_means_and_state_round_trip():
    monitor = TrainMonitor(torch.device("cpu"), ("loss", "grad_norm"))
    for step, loss in enumerate([1.0, 2.0, 3.0, 6.0], start=1):
        monitor.add(step, loss=torch.tensor(loss), grad_norm=torch.tensor(10.0 * step))
        if step == 2:
            assert monitor.interval_means(step) == {"loss": 1.5, "grad_norm": 15.0}
    monitor.sync()
    restored = TrainMonitor(torch.device("cpu"), ("loss", "grad_norm"))
    restored.load_state_dict(monitor.state_dict())  # an interrupted epoch keeps its running means
    assert restored.interval_means(4) == {"loss": 4.5, "grad_norm": 35.0}
    assert restored.epoch_means(4) == {"loss": 3.0, "grad_norm": 25.0}
    assert restored.epoch_means(4) == {"loss": 0.0, "grad_norm": 0.0}  # a new epoch starts empty


def test_nan_loss_stops_with_one_line_naming_step_value_and_last_checkpoint(tmp_path, capsys):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save({"w": 1}, step=4)
    write_summary(tmp_path, "m", {"valid_ppl": float("inf")}, status="finished")
    monitor = TrainMonitor(torch.device("cpu"), ("loss",), checkpointer, tmp_path)
    monitor.add(5, loss=torch.tensor(2.0))
    monitor.add(6, loss=torch.tensor(float("nan")))
    monitor.add(7, loss=torch.tensor(float("inf")))
    with pytest.raises(SystemExit) as stop:
        monitor.interval_means(7)
    assert stop.value.code == EXIT_DIVERGED and EXIT_DIVERGED not in (0, 2, 75)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "diverged" in err[0] and "nan" in err[0] and "at step 6" in err[0] and "2 such steps" in err[0]
    assert "step-00000004.pt" in err[0] and "train.lr" in err[0]
    summary = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: no NaN/Infinity
    assert summary["status"] == "diverged" and summary["metrics"]["valid_ppl"] is None
    assert "at step 6" in summary["diverged"]["reason"] and summary["diverged"]["last_checkpoint"].endswith("4.pt")


def test_gradient_norm_is_watched_except_under_fp16_loss_scaling():
    for fp16_scaler, stops in ((False, True), (True, False)):
        monitor = TrainMonitor(torch.device("cpu"), ("loss", "grad_norm"), fp16_scaler=fp16_scaler)
        monitor.add(1, loss=torch.tensor(1.0), grad_norm=torch.tensor(float("inf")))
        monitor.add(2, loss=torch.tensor(3.0), grad_norm=torch.tensor(4.0))
        if stops:
            with pytest.raises(SystemExit):
                monitor.epoch_means(2)
        else:  # a step the scaler skipped: not divergence, and not in the mean
            assert monitor.epoch_means(2) == {"loss": 2.0, "grad_norm": 2.0}


def test_summary_is_strict_json_with_status(tmp_path):
    write_summary(tmp_path, "m", {"a": float("nan"), "b": [1.0, float("-inf")]}, extra={"c": float("inf")})
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"model": "m", "status": "finished", "metrics": {"a": None, "b": [1.0, None]},
                                "extra": {"c": None}}


def test_a_finite_loss_that_explodes_is_divergence_too(capsys):
    monitor = TrainMonitor(torch.device("cpu"), ("loss",))
    monitor.add(1, loss=torch.tensor(7.0))
    monitor.interval_means(1)
    monitor.add(2, loss=torch.tensor(6500.0))  # high, but below 1000x the first mean
    monitor.interval_means(2)
    monitor.add(3, loss=torch.tensor(3.7e7))
    with pytest.raises(SystemExit) as stop:
        monitor.interval_means(3)
    assert stop.value.code == EXIT_DIVERGED
    assert "loss exploded to a mean of 3.7e+07" in capsys.readouterr().err
