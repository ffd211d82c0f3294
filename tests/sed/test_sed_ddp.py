"""Two gloo ranks on the tiny CRNN run: the run folder is written by rank 0 alone, and a 2-rank run
preempted through one rank resumes to exactly the numbers of an uninterrupted 2-rank run. Not
compared with one process: BatchNorm normalises each rank's half batch with its own statistics."""
import json
import sys


def test_two_ranks_write_one_run_folder_and_resume_after_preemption(tiny_root, tiny_args, tmp_path,
                                                                    two_rank_preempted_run):
    def command(name, *extra):
        return [sys.executable, "-m", "sed.train", *tiny_args(tiny_root, tmp_path, name, "train.epochs=3",
                                                              "run.device=cpu", *extra)]
    two_rank_preempted_run(command, tmp_path / "sed")
    straight, ddp = (json.loads((tmp_path / "sed" / name / "summary.json").read_text()) for name in ("straight", "ddp"))
    assert ddp["metrics"] == straight["metrics"] and ddp["best_epoch"] == straight["best_epoch"]
