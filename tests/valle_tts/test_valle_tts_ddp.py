"""Two gloo ranks on the tiny prepared corpus: the run folder is written by rank 0 alone, and a
2-rank run preempted through one rank resumes to exactly the weights and validation numbers of an
uninterrupted 2-rank run. Not compared with one process: lhotse's duration-bucketed sampler
partitions the cuts over the ranks, so the batches differ."""
import sys

import torch


def test_two_ranks_write_one_run_folder_and_resume_after_preemption(prepared, tmp_path, two_rank_preempted_run):
    _, config = prepared

    def command(name, *extra):
        return [sys.executable, "-m", "valle_tts.train", "--config", config, "model.dropout=0", "train.epochs=3",
                "run.device=cpu", f"run.root={tmp_path}", f"run.name={name}", *extra]
    straight, resumed = two_rank_preempted_run(command, tmp_path / "valle_tts", ("FINISHED", "train_log.json"))
    assert resumed["valid"] == straight["valid"]
    for name, value in straight["model"].items():
        assert torch.equal(resumed["model"][name], value), name
