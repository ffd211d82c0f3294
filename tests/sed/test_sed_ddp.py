"""Two gloo ranks on the tiny CRNN run: the run folder is written by rank 0 alone, and a 2-rank run
preempted through one rank resumes to exactly the numbers of an uninterrupted 2-rank run. Not
compared with one process: BatchNorm normalises each rank's half batch with its own statistics."""
import json
import sys

from common.preemption import EXIT_PREEMPTED


def test_two_ranks_write_one_run_folder_and_resume_after_preemption(tiny_root, tiny_args, tmp_path, run_two_ranks,
                                                                    check_rank0_run_folder):
    def command(name, *extra):
        return [sys.executable, "-m", "sed.train", *tiny_args(tiny_root, tmp_path, name, "train.epochs=3",
                                                              "run.device=cpu", *extra)]
    codes, outputs = run_two_ranks(command("straight"))
    assert codes == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    codes, outputs = run_two_ranks(command("ddp"), preempt=True)
    assert codes == [EXIT_PREEMPTED] * 2, outputs[0][1][-2000:]
    total = check_rank0_run_folder(tmp_path / "sed" / "straight", launches=1)["step"]
    assert 0 < check_rank0_run_folder(tmp_path / "sed" / "ddp", launches=1, done_files=())["step"] < total
    codes, outputs = run_two_ranks(command("ddp", "--resume"))
    assert codes == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert check_rank0_run_folder(tmp_path / "sed" / "ddp", launches=2)["step"] == total
    straight, ddp = (json.loads((tmp_path / "sed" / name / "summary.json").read_text()) for name in ("straight", "ddp"))
    assert ddp["metrics"] == straight["metrics"] and ddp["best_epoch"] == straight["best_epoch"]
