"""Two gloo ranks on the demo config shrunk to seconds, generating its shapes set on first use
(rank 0 writes it while rank 1 waits): the run folder is written by rank 0 alone, and a 2-rank run
preempted through one rank resumes to exactly the numbers of an uninterrupted 2-rank run. Not
compared with one process: the small CNN's BatchNorm normalises each rank's half batch with its own
statistics."""
import json
import subprocess
import sys

import torch

from common.config import REPO_ROOT

TINY = ["data.generate_shapes=40", "data.image_size=32", "encoder.channels=16", "encoder.grid_size=4",
        "decoder.embed_dim=16", "decoder.hidden_dim=24", "decoder.attention_dim=16", "train.batch_size=16",
        "train.log_every_steps=2", "train.epochs=2", "train.valid_images=8", "decode.max_len=12", "run.device=cpu"]


def test_two_ranks_write_one_run_folder_and_resume_after_preemption(tmp_path, two_rank_preempted_run):
    def command(name, *extra):
        return [sys.executable, "-m", "captioning.train", "--config", str(REPO_ROOT / "captioning/configs/demo.yaml"),
                f"data.root={tmp_path / name / 'shapes'}", *TINY, f"run.root={tmp_path}", f"run.name={name}", *extra]
    two_rank_preempted_run(command, tmp_path / "captioning")
    straight, ddp = (json.loads((tmp_path / "captioning" / name / "summary.json").read_text())
                     for name in ("straight", "ddp"))
    assert ddp["metrics"] == straight["metrics"]
    drop_speed = lambda history: [{k: v for k, v in h.items() if k != "train_images_per_s"} for h in history]
    assert drop_speed(ddp["history"]) == drop_speed(straight["history"])


def test_two_ranks_fine_tune_with_scst_and_resume_exactly(tmp_path, two_rank_preempted_run):
    # each rank samples its own captions (seed + rank) and the gradients of both are averaged
    config = str(REPO_ROOT / "captioning/configs/demo.yaml")
    shapes = f"data.root={tmp_path / 'shapes'}"
    first = subprocess.run([sys.executable, "-m", "captioning.train", "--config", config, shapes, *TINY,
                            "train.epochs=1", f"run.root={tmp_path / 'xe'}", "run.name=xe"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]

    def command(name, *extra):
        return [sys.executable, "-m", "captioning.train", "--config", config, shapes, *TINY,
                "train.method=scst", f"train.init_from={tmp_path / 'xe' / 'captioning' / 'xe'}", "train.batch_size=4",
                "train.scst_samples=3", "train.lr=1e-3", f"run.root={tmp_path}", f"run.name={name}", *extra]
    straight, resumed = two_rank_preempted_run(command, tmp_path / "captioning")
    assert json.loads((tmp_path / "captioning" / "ddp" / "summary.json").read_text())["model"].endswith("+scst")
    for name, value in straight["model"].items():
        assert torch.equal(resumed["model"][name], value), name
