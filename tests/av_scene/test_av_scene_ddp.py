"""Two gloo ranks on the small fusion run: the run folder is written by rank 0 alone, and a 2-rank
run preempted through one rank resumes to exactly the numbers of an uninterrupted 2-rank run. Not
compared with one process: BatchNorm normalises each rank's half batch with its own statistics."""
import json
import sys

from common.config import REPO_ROOT


def test_two_ranks_write_one_run_folder_and_resume_after_preemption(small_root, tmp_path, two_rank_preempted_run):
    def command(name, *extra):
        return [sys.executable, "-m", "av_scene.train", "--config", str(REPO_ROOT / "av_scene/configs/demo.yaml"),
                f"data.root={small_root}", "data.synthetic=false", "data.num_frames=8", "data.batch_size=16",
                "data.valid_fraction=0.25", "model.hidden=16", "model.embed=8", "train.epochs=3",
                "train.early_stop_patience=0", "train.mixup_alpha=0.4", "run.device=cpu", f"run.root={tmp_path}",
                f"run.name={name}", *extra]
    two_rank_preempted_run(command, tmp_path / "av_scene")
    straight, ddp = (json.loads((tmp_path / "av_scene" / name / "summary.json").read_text())["metrics"]
                     for name in ("straight", "ddp"))
    assert ddp == straight
