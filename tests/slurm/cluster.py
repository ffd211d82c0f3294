"""A real one-node Slurm cluster on localhost for the template tests: munged, slurmctld and slurmd
with a partition named dgx2 and a stand-in GPU gres (File=/dev/null)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "munged")


def missing_binaries() -> list[str]:
    return [b for b in SLURM_BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_munge() -> bool:
    """munged as the munge user (it refuses root), with its runtime folders in place.
    Returns whether we started it (and so must stop it)."""
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return False
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/etc/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/mungekey", "--create"], check=True)
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
    return True


class LocalSlurm:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.conf = workdir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []
        self.started_munge = False

    def start(self) -> None:
        host = socket.gethostname().split(".")[0]
        (self.dir / "state").mkdir()
        (self.dir / "spool").mkdir()
        # CPUs=16 with config_overrides: the templates ask for 6 cores; this machine has fewer.
        self.conf.write_text(f"""ClusterName=ci
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={self.dir}/state
SlurmdSpoolDir={self.dir}/spool
SlurmctldPidFile={self.dir}/slurmctld.pid
SlurmdPidFile={self.dir}/slurmd.pid
SlurmctldLogFile={self.dir}/slurmctld.log
SlurmdLogFile={self.dir}/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
GresTypes=gpu
JobRequeue=1
ReturnToService=2
MpiDefault=none
KillWait=10
NodeName={host} CPUs=16 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=dgx2 Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        # Two stand-in GPUs (any character device will do): two jobs may run side by side.
        (self.dir / "gres.conf").write_text(f"NodeName={host} Name=gpu File=/dev/null\n"
                                            f"NodeName={host} Name=gpu File=/dev/zero\n")
        self.started_munge = _start_munge()
        for daemon in ("slurmctld", "slurmd"):
            self.procs.append(subprocess.Popen([f"/usr/sbin/{daemon}", "-D", "-f", str(self.conf)],
                                               env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 30
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True).stdout
            if out.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the local Slurm cluster did not come up; see {self.dir}/slurmctld.log")

    def job_field(self, job_id: str, field: str) -> str:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=self.env,
                             capture_output=True, text=True).stdout
        for item in out.split():
            if item.startswith(field + "="):
                return item.split("=", 1)[1]
        return ""

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.started_munge:
            subprocess.run(["pkill", "-x", "munged"], capture_output=True)
