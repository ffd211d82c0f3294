"""A real Slurm run of a template: the job is signalled before its (one-minute) time limit,
checkpoints, requeues itself, resumes and finishes with the same result as an uninterrupted run.
Needs Debian's slurm-wlm and munge (.ci/run installs them) and root (munged, slurmd)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import REPO_ROOT
from lm.synthetic import write_corpus

sys.path.insert(0, str(Path(__file__).parent))
from cluster import LocalSlurm, missing_binaries  # noqa: E402

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
EPOCHS = "train.epochs=24"  # ~50 s of training: long enough to be cut by the time limit


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (munged and slurmd)")
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    slurm.start()
    yield slurm
    slurm.stop()


def test_lm_template_survives_the_time_limit(cluster, tmp_path):
    corpus = tmp_path / "markov"
    write_corpus(corpus, 100_000)  # once, before two runs read it
    overrides = [EPOCHS, f"data.dir={corpus}"]
    # The uninterrupted reference runs beside the Slurm job (the machine has two cores).
    reference_dir = tmp_path / "reference" / "lm" / "ref"
    reference = subprocess.Popen(
        f"{sys.executable} -m lm.train --config lm/configs/demo.yaml run.name=ref run.root={tmp_path / 'reference'} "
        f"{' '.join(overrides)} && {sys.executable} -m lm.evaluate {reference_dir}",
        shell=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    slurm_root = tmp_path / "slurm_runs"
    env = {**cluster.env, "CONFIG": "lm/configs/demo.yaml", "SBATCH_TIMELIMIT": "1",
           # the template's warning comes 600 s before 12 h; here 50 s before 1 min
           "SBATCH_SIGNAL": "B:USR1@50", "SBATCH_OUTPUT": str(tmp_path / "%x-%j.out")}
    job_id = subprocess.run(["sbatch", "--parsable", "slurm/lm_lstm.sh", f"run.root={slurm_root}",
                             "run.name=cut", *overrides], cwd=REPO_ROOT, env=env, check=True,
                            capture_output=True, text=True).stdout.strip()
    run_dir = slurm_root / "lm" / "cut"
    deadline = time.time() + 420
    state, released = "", None
    while time.time() < deadline and state not in FINAL_STATES:
        # Slurm holds a requeued job for ~2 minutes; release it sooner to keep the test short, but not
        # at once: a restart within the second of the requeue gets a credential slurmd has just revoked
        # (whole seconds), and the job ends FAILED ("Job credential revoked" in slurmctld.log).
        restarts = cluster.job_field(job_id, "Restarts")
        if cluster.job_field(job_id, "Reason") == "BeginTime" and restarts != released:
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now+3"], env=cluster.env)
            released = restarts  # once per requeue: every update would push the start 3 s further
        time.sleep(2)
        state = cluster.job_field(job_id, "JobState")
    log = (tmp_path / f"lm_lstm-{job_id}.out").read_text()
    assert state == "COMPLETED", f"job state {state or 'unknown'}; its log:\n{log}"
    assert "time limit near: asking the training to checkpoint" in log
    assert f"requeueing job {job_id}" in log
    assert "resuming from" in log
    assert "training finished; evaluating" in log
    assert (run_dir / "FINISHED").is_file() and (run_dir / "samples.txt").is_file()  # evaluate.py ran
    assert int(cluster.job_field(job_id, "Restarts")) >= 1
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    expected = json.loads((reference_dir / "summary.json").read_text())["metrics"]
    got = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert got == expected
