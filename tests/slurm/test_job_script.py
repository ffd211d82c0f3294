"""slurm/_job.sh without Slurm: a time-limit warning (SIGUSR1 to the batch shell) that arrives during
the final evaluation must not kill the job (it did: the job ended FAILED, the evaluation cut short)."""
import os
import subprocess
import sys

from common.config import REPO_ROOT

TRAIN = """import pathlib, sys
root = next(arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("run.root="))
run_dir = pathlib.Path(root) / "toyproject" / "toy"
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "FINISHED").touch()
"""
EVALUATE = """import os, signal, time
os.kill(os.getppid(), signal.SIGUSR1)  # the batch shell gets Slurm's warning now
time.sleep(1)
print("evaluation complete")
"""


def test_time_limit_warning_during_the_evaluation_lets_it_finish(tmp_path, fake_project):
    fake_project(tmp_path / "code", "toyproject", {"train.py": TRAIN, "evaluate.py": EVALUATE})
    script = 'source slurm/_job.sh; train_with_restarts toyproject config.yaml "$@"'
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(REPO_ROOT), "PYTHONPATH": str(tmp_path / "code"),
           "RUN_NAME": "toy", "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script, "job", f"run.root={tmp_path / 'runs'}"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "time limit near during the evaluation" in done.stdout
    assert "evaluation complete" in done.stdout
    assert (tmp_path / "runs" / "toyproject" / "toy" / "FINISHED").is_file()
