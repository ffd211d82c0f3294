"""`make gpu-check`: every pipeline's demo on the GPU with mixed precision, in a few minutes.

    python -m common.gpu_check [--device cuda] [--projects lm vae ...] [--no-cpu]

For each pipeline: a short demo run with run.amp=true (fp16 + grad scaler on a V100, bf16 on Ampere
and newer), stopped by SIGUSR1 after its first epoch line and resumed with --resume (checkpoint and
resume on the GPU), then its evaluate.py. It checks that the exit codes are right, that every
logged training loss is finite and that the loss falls, and reads the throughput the run recorded.
The same short run on the CPU gives the figure beside it. Exits non-zero on any failure; on a
machine without CUDA it says so in one line and exits 0. `--device cpu` runs the whole check on the
CPU (how the check itself is tested). Not a test: a script to run on a GPU node.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.config import REPO_ROOT
from common.preemption import EXIT_PREEMPTED

# cuDNN's warning when an RNN's weights are not one flat buffer (it then copies them at every call):
# the weight-dropped LSTM must not cause it.
CUDNN_COPY = "not part of single contiguous chunk of memory"

# project -> (overrides that shorten the demo, tensorboard tag of the training loss, throughput unit)
PIPELINES = {
    "lm": (["train.epochs=3", "model.weight_drop=0.3"], "loss/train", "tokens/s"),  # weight drop: see CUDNN_COPY
    "vae": (["train.epochs=6", "train.figures_every_epochs=0"], "train/loss", "images/s"),
    "sed": (["train.epochs=4"], "loss/train", "clips/s"),
    "captioning": (["train.epochs=3"], "loss/train_cross_entropy", "train images/s"),
    "av_scene": (["train.epochs=8", "train.early_stop_patience=0"], "loss/train", "clips/s"),
    "valle_tts": (["train.epochs=6", "train.log_every_steps=2"], "train/loss", "train frames/s"),
}


def run(command: list[str], timeout: float, preempt: bool = False) -> subprocess.CompletedProcess:
    """Run a pipeline command; with `preempt`, SIGUSR1 once it prints its first epoch line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    lines = []
    if preempt:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("epoch ") or line.startswith("step "):
                proc.send_signal(signal.SIGUSR1)
                break
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, proc.returncode, "".join(lines) + out, err)


def train_losses(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    values = []
    for events in sorted((run_dir / "tb").glob("events.*")):  # one file per launch, in order
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [event.value for event in accumulator.Scalars(tag)]
    return values


def throughput(project: str, run_dir: Path) -> float:
    """The training throughput the run recorded itself."""
    if project == "lm":
        return train_losses(run_dir, "tokens_per_s")[-1]
    if project == "valle_tts":
        return json.loads((run_dir / "train_log.json").read_text())["train_frames_per_s"]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"vae": lambda: summary["train"]["images_per_s"], "sed": lambda: summary["train_clips_per_s"],
            "captioning": lambda: summary["history"][-1]["train_images_per_s"],
            "av_scene": lambda: summary["train_clips_per_s"]}[project]()


def decode_speed(project: str, device: str, run_dir: Path) -> tuple[str, float] | None:
    """Captioning beam-5 decoding images/s; VALL-E AR decoding frames/s with the KV cache."""
    if project == "captioning":
        out = subprocess.run([sys.executable, "-m", "captioning.benchmark", "--config", "captioning/configs/demo.yaml",
                              "--images", "64", f"run.device={device}", "decode.beam_size=5"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout
        return "beam-5 decode images/s", json.loads(out)["beam5_batched_images_per_s"]
    if project == "valle_tts":
        import torch

        from common.checkpoint import Checkpointer, load_checkpoint
        from common.config import load_config
        from valle_tts.config import Config
        from valle_tts.models.valle import VALLE
        cfg = load_config(Config, run_dir / "config.yaml")
        state = load_checkpoint(Checkpointer(run_dir).step_checkpoints()[-1])
        vocab = state["model"]["ar.text_embed.weight"].shape[0]
        model = VALLE(cfg.model, vocab).to(device).eval()
        model.load_state_dict(state["model"])
        text = torch.randint(1, vocab, (40,), device=device)
        prompt = torch.randint(0, 1024, (225,), device=device)  # 3 s at 75 Hz
        generator = torch.Generator(device).manual_seed(0)
        model.ar.generate(text, prompt, 8, top_k=20, generator=generator)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        frames = len(model.ar.generate(text, prompt, 300, top_k=20, generator=generator)[0])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return "AR decode frames/s (KV cache)", frames / (time.perf_counter() - started)
    return None


def check_pipeline(project: str, device: str, root: Path, timeout: float) -> tuple[dict, list[str]]:
    """Preempted + resumed short demo run, loss checks, evaluate.py; (figures, failures)."""
    overrides, tag, unit = PIPELINES[project]
    command = [sys.executable, "-m", f"{project}.train", "--config", f"{project}/configs/demo.yaml",
               f"run.device={device}", "run.amp=true", f"run.root={root}", "run.name=gpu-check", *overrides]
    run_dir = root / project / "gpu-check"
    failures = []
    first = run(command, timeout, preempt=True)
    if first.returncode not in (EXIT_PREEMPTED, 0):
        return {}, [f"training exited {first.returncode}: {first.stderr.strip()[-400:]}"]
    if first.returncode == 0:
        failures.append("the run ended before SIGUSR1 reached it: checkpoint/resume not exercised")
    else:
        resumed = run(command + ["--resume"], timeout)
        if resumed.returncode != 0:
            return {}, [f"--resume exited {resumed.returncode}: {resumed.stderr.strip()[-400:]}"]
        first.stderr += resumed.stderr
    if CUDNN_COPY in first.stderr:
        failures.append(f"cuDNN copies the RNN weights at every call ('{CUDNN_COPY}')")
    losses = train_losses(run_dir, tag)
    if not losses or not all(math.isfinite(v) for v in losses):
        failures.append(f"training loss not finite: {losses}")
    elif len(losses) < 2 or not losses[-1] < losses[0]:
        failures.append(f"training loss did not fall: {losses[0]:.4g} -> {losses[-1]:.4g}")
    evaluated = subprocess.run([sys.executable, "-m", f"{project}.evaluate", str(run_dir)], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=timeout)
    if evaluated.returncode != 0:
        failures.append(f"evaluate.py exited {evaluated.returncode}: {evaluated.stderr.strip()[-400:]}")
    figures = {unit: throughput(project, run_dir)}
    decode = decode_speed(project, device, run_dir)
    if decode:
        figures[decode[0]] = decode[1]
    return figures, failures


def cpu_figures(project: str, root: Path, timeout: float) -> dict:
    """The same short demo run on the CPU (no preemption, no evaluation): its throughput figures."""
    overrides, _, unit = PIPELINES[project]
    command = [sys.executable, "-m", f"{project}.train", "--config", f"{project}/configs/demo.yaml",
               "run.device=cpu", f"run.root={root}", "run.name=cpu-check", *overrides]
    done = run(command, timeout)
    if done.returncode != 0:
        return {}
    run_dir = root / project / "cpu-check"
    figures = {unit: throughput(project, run_dir)}
    decode = decode_speed(project, "cpu", run_dir)
    if decode:
        figures[decode[0]] = decode[1]
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--projects", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU figures")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per command")
    args = parser.parse_args(argv)
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible on this machine; nothing to check (run it on a GPU node)")
        return 0
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    amp = ("bf16" if torch.cuda.get_device_capability(0)[0] >= 8 else "fp16 + grad scaler") \
        if args.device.startswith("cuda") else "off (cpu)"
    print(f"gpu-check on {where}, mixed precision {amp}, {time.strftime('%Y-%m-%d')}", flush=True)
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for project in args.projects:
            started = time.time()
            try:
                figures, failures = check_pipeline(project, args.device, Path(tmp) / "device", args.timeout)
                cpu = {} if args.no_cpu else cpu_figures(project, Path(tmp) / "cpu", args.timeout)
            except Exception as err:  # a check that breaks is a failure of that pipeline, not of the table
                figures, failures, cpu = {}, [f"{type(err).__name__}: {err}"], {}
            failed |= bool(failures)
            for unit in figures or {"-": None}:
                rows.append((project, unit, figures.get(unit), cpu.get(unit), "; ".join(failures) or "ok"))
            print(f"  {project}: {'FAILED: ' + '; '.join(failures) if failures else 'ok'} "
                  f"({time.time() - started:.0f} s)", flush=True)
    print(f"\n| pipeline | throughput | {args.device} | cpu | checks |\n|---|---|---:|---:|---|")
    for project, unit, value, cpu_value, status in rows:
        fmt = lambda v: f"{v:,.0f}" if v is not None else "-"
        print(f"| {project} | {unit} | {fmt(value)} | {fmt(cpu_value)} | {status} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
