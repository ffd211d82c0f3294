"""Two gloo ranks on the tiny CRNN run: the run folder is written by rank 0 alone, and a 2-rank run
preempted through one rank resumes to exactly the numbers of an uninterrupted 2-rank run, also as a
mean teacher with a pseudo-label pass (rank 0 tags the clips, rank 1 reads its labels). Not compared
with one process: BatchNorm normalises each rank's half batch with its own statistics."""
import json
import sys

import torch

from sed import train
from sed.config import CLASSES


def test_two_ranks_write_one_run_folder_and_resume_after_preemption(tiny_root, tiny_args, tmp_path,
                                                                    two_rank_preempted_run):
    def command(name, *extra):
        return [sys.executable, "-m", "sed.train", *tiny_args(tiny_root, tmp_path, name, "train.epochs=3",
                                                              "run.device=cpu", *extra)]
    two_rank_preempted_run(command, tmp_path / "sed")
    straight, ddp = (json.loads((tmp_path / "sed" / name / "summary.json").read_text()) for name in ("straight", "ddp"))
    assert ddp["metrics"] == straight["metrics"] and ddp["best_epoch"] == straight["best_epoch"]


def test_two_ranks_train_a_mean_teacher_on_pseudo_labels_and_resume_exactly(unlabelled_root, tiny_args, tmp_path,
                                                                              two_rank_preempted_run):
    unlabelled = "data.unlabelled_audio=[audio/train/unlabel_in_domain]"
    # a first pass whose threshold 0 tags every class of every clip: enough for the mechanics
    train.main(tiny_args(unlabelled_root, tmp_path / "first", "first", "postprocess.tag_threshold=0.0"))
    source = tmp_path / "first" / "sed" / "first"

    def command(name, *extra):
        return [sys.executable, "-m", "sed.train", *tiny_args(
            unlabelled_root, tmp_path, name, "train.epochs=3", "run.device=cpu", unlabelled,
            "train.method=mean_teacher", "train.mean_teacher.unlabelled_fraction=0.5",
            "train.mean_teacher.rampup_epochs=1", f"train.pseudo_labels_from={source}", *extra)]
    straight, resumed = two_rank_preempted_run(command, tmp_path / "sed")
    for weights in ("model", "teacher"):
        for name, value in straight[weights].items():
            assert torch.equal(resumed[weights][name], value), (weights, name)
    for run in ("straight", "ddp"):
        lines = (tmp_path / "sed" / run / "pseudo_labels.tsv").read_text().splitlines()
        assert len(lines) == 1 + 10 and all(set(line.split("\t")[1].split(",")) == set(CLASSES) for line in lines[1:])
