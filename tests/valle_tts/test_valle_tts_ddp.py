"""Two gloo ranks on the tiny prepared corpus: the run folder is written by rank 0 alone, and a
2-rank run preempted through one rank resumes to exactly the weights and validation numbers of an
uninterrupted 2-rank run. Not compared with one process: lhotse's duration-bucketed sampler
partitions the cuts over the ranks, so the batches differ."""
import json
import sys

import torch

from common.preemption import EXIT_PREEMPTED


def test_two_ranks_write_one_run_folder_and_resume_after_preemption(prepared, tmp_path, run_two_ranks,
                                                                    check_rank0_run_folder):
    _, config = prepared

    def command(name, *extra):
        return [sys.executable, "-m", "valle_tts.train", "--config", config, "model.dropout=0", "train.epochs=3",
                "run.device=cpu", f"run.root={tmp_path}", f"run.name={name}", *extra]
    codes, outputs = run_two_ranks(command("straight"))
    assert codes == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    codes, outputs = run_two_ranks(command("ddp"), preempt=True)
    assert codes == [EXIT_PREEMPTED] * 2, outputs[0][1][-2000:]
    done = ("FINISHED", "train_log.json")
    straight = check_rank0_run_folder(tmp_path / "valle_tts" / "straight", launches=1, done_files=done)
    assert 0 < check_rank0_run_folder(tmp_path / "valle_tts" / "ddp", launches=1, done_files=())["step"] \
        < straight["step"]
    codes, outputs = run_two_ranks(command("ddp", "--resume"))
    assert codes == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    resumed = check_rank0_run_folder(tmp_path / "valle_tts" / "ddp", launches=2, done_files=done)
    assert resumed["step"] == straight["step"] and resumed["valid"] == straight["valid"]
    for name, value in straight["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    logs = [json.loads((tmp_path / "valle_tts" / name / "train_log.json").read_text()) for name in ("straight", "ddp")]
    assert logs[0]["valid"] == logs[1]["valid"]
