import subprocess
import sys

import pytest

from common.config import ConfigError
from common.sweep import parse_grid, point_name

FAKE_TRAIN = """
import sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
run_dir = f"{args['run.root']}/fakeproj/{args['run.name']}"
import os; os.makedirs(run_dir, exist_ok=True)
if args.get("model.hidden") == "13":
    sys.exit(1)  # a failing point is reported, not hidden
open(run_dir + "/hidden", "w").write(args["model.hidden"])
"""
FAKE_EVALUATE = """
import json, sys
from pathlib import Path
run_dir = Path(sys.argv[1])
hidden = int((run_dir / "hidden").read_text())
summary = {"model": "fake", "metrics": {"valid_ppl": 1000.0 / hidden}, "params": hidden * 10}
(run_dir / "summary.json").write_text(json.dumps(summary))  # what common.run.write_summary writes
"""


def test_grid_expands_every_combination():
    assert parse_grid(["a.x=1,2", "b=[3,4]", "c=z"]) == [["a.x=1", "b=[3,4]", "c=z"], ["a.x=2", "b=[3,4]", "c=z"]]
    assert point_name("lstm", ["model.hidden=200", "optim.lr=20"]) == "lstm-hidden200-lr20"
    with pytest.raises(ConfigError, match="must look like key=v1,v2"):
        parse_grid(["model.hidden"])


def test_sweep_runs_each_point_and_writes_one_table(tmp_path, fake_project):
    package = fake_project(tmp_path / "code", "fakeproj",
                           {"train.py": FAKE_TRAIN, "evaluate.py": FAKE_EVALUATE, "configs/base.yaml": "{}\n"})
    env = {"PYTHONPATH": str(tmp_path / "code"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "common.sweep", "--config", str(package / "configs" / "base.yaml"),
                             "--grid", "model.hidden=10,13,20", "--runs-root", str(tmp_path / "runs")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1  # one point failed
    table = (tmp_path / "runs" / "fakeproj" / "sweeps" / "base.md").read_text().splitlines()
    assert table[0] == "| run | model.hidden | model | params | valid_ppl | status |"
    assert table[2] == "| base-hidden10 | 10 | fake | 100 | 100 |  |"
    assert "base-hidden13 | 13 |" in table[3] and "no summary.json" in table[3]
    assert table[4] == "| base-hidden20 | 20 | fake | 200 | 50 |  |"
    assert (tmp_path / "runs" / "fakeproj" / "sweeps" / "base.csv").is_file()
