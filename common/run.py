"""The run folder: runs/<project>/<name>/ with config.yaml, the code version, an environment
summary, tensorboard events, checkpoints/, evaluation outputs, figures and summary.json."""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from common.config import REPO_ROOT, ConfigError, resolve_path, save_config, to_dict


def run_dir_for(project: str, run_cfg) -> Path:
    return resolve_path(run_cfg.root) / project / run_cfg.name


def git_version() -> dict:
    """Commit of the repository and whether the working tree had uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"commit": commit or "unknown (not a git checkout)", "dirty": dirty}


def environment_summary(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "device": str(device),
            "command": " ".join(sys.argv)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def flat_settings(tree: dict, prefix: str = "") -> dict:
    """{"model": {"hidden": 200}} -> {"model.hidden": 200}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_changed(saved: dict, given: dict) -> list[str]:
    """["model.hidden: 200 -> 650", ...] for the keys whose values differ."""
    saved, given = flat_settings(saved), flat_settings(given)
    return [f"{key}: {saved.get(key)} -> {given.get(key)}" for key in sorted(saved.keys() | given.keys())
            if saved.get(key) != given.get(key)]


# Settings this process resumes with that differ from the run folder's config.yaml (for the error
# that explains a checkpoint which no longer fits the model: see common.checkpoint).
RESUME_CHANGES: list[str] = []


def prepare_run_dir(project: str, cfg, device: torch.device, resume: bool, is_main: bool = True) -> Path:
    """Create (or reopen, when resuming) the run folder and record config, code version and
    environment. A fresh run refuses to write over a folder that already holds checkpoints; a
    finished run's folder is left exactly as it is."""
    run_dir = run_dir_for(project, cfg.run)
    ckpt_dir = run_dir / "checkpoints"
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise ConfigError(f"run folder {run_dir} already has checkpoints; pass --resume to continue it "
                          f"or run.name=<new name> for a new run")
    saved = run_dir / "config.yaml"
    if resume and saved.is_file():
        RESUME_CHANGES[:] = settings_changed(yaml.safe_load(saved.read_text()), to_dict(cfg))
        if is_finished(run_dir):
            if RESUME_CHANGES and is_main:
                print(f"note: {run_dir} is finished; it was trained without these settings, which are not "
                      f"applied: {'; '.join(RESUME_CHANGES)}")
            return run_dir
        if RESUME_CHANGES and is_main:
            print(f"resuming with changed settings: {'; '.join(RESUME_CHANGES)}")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, saved)
        record = {"git": git_version(), "environment": environment_summary(device)}
        (run_dir / "version.json").write_text(json.dumps(record, indent=2) + "\n")
    return run_dir


def _strict_json(value):
    """NaN and Infinity are not JSON: a metric that never became finite is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def write_json(path: Path, record: dict) -> None:
    """Strict JSON (see _strict_json), written to a temporary file and renamed: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_strict_json(record), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_summary(run_dir: str | Path, model: str, metrics: dict, status: str = "finished", **extra) -> Path:
    """summary.json: the run's headline numbers (read by `make demo` and common.sweep). Strict JSON,
    with `status`: finished | diverged."""
    path = Path(run_dir) / "summary.json"
    write_json(path, {"model": model, "status": status, "metrics": metrics, **extra})
    return path


def update_summary(run_dir: str | Path, **fields) -> Path:
    """Set some fields of summary.json (created when absent), e.g. status="diverged"."""
    path = Path(run_dir) / "summary.json"
    record = read_summary(run_dir) or {}
    record.update(fields)
    write_json(path, record)
    return path


def read_summary(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def mark_finished(run_dir: str | Path) -> None:
    """A finished run is never restarted by a requeued Slurm job."""
    (Path(run_dir) / "FINISHED").write_text("training finished\n")


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "FINISHED").is_file()


def clear_run_dir(run_dir: str | Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
