"""Two gloo processes on the LM demo: same perplexities as one process with the same global batch,
checkpoints written by rank 0 only, and a 2-process run resumed from a checkpoint ends exactly
where the uninterrupted 2-process run ends."""
import json
import subprocess
import sys

import pytest

from common.config import REPO_ROOT
from lm.synthetic import write_corpus

# No dropout, so one process and two see the same computation; a constant learning rate, so a run
# of 1 epoch is the first half of a run of 2.
SETTINGS = ["model.dropout=0", "model.dropout_emb=0", "model.dropout_input=0", "model.dropout_hidden=0",
            "model.weight_drop=0", "train.schedule=none", "train.warmup_steps=0", "run.device=cpu"]


def lm_command(root, corpus, name, *extra):
    return [sys.executable, "-m", "lm.train", "--config", str(REPO_ROOT / "lm/configs/demo.yaml"),
            f"data.dir={corpus}", f"run.root={root}", f"run.name={name}", *SETTINGS, *extra]


def finish(procs):
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs[0][1][-2000:] + outputs[1][1][-2000:]


def metrics(root, name):
    return json.loads((root / "lm" / name / "summary.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    write_corpus(folder, train_tokens=20_000, eval_tokens=3_000)
    return folder


def test_two_ranks_match_one_process(corpus, tmp_path, launch_ranks):
    subprocess.run(lm_command(tmp_path, corpus, "single", "train.epochs=2"), check=True, capture_output=True)
    finish(launch_ranks(lm_command(tmp_path, corpus, "ddp", "train.epochs=2")))
    single, ddp = metrics(tmp_path, "single"), metrics(tmp_path, "ddp")
    # Same global batch of 32 rows (2 x 16): equal up to float summation order.
    assert ddp["valid_ppl"] == pytest.approx(single["valid_ppl"], rel=1e-4)
    assert ddp["test_ppl"] == pytest.approx(single["test_ppl"], rel=1e-4)


def test_two_ranks_checkpoint_on_rank_0_and_resume_exactly(corpus, tmp_path, launch_ranks):
    finish(launch_ranks(lm_command(tmp_path, corpus, "straight", "train.epochs=2")))
    finish(launch_ranks(lm_command(tmp_path, corpus, "half", "train.epochs=1", "run.keep_last=1")))
    checkpoints = sorted((tmp_path / "lm" / "half" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints if p.name != "best.pt"] == [checkpoints[-1].name]  # one writer
    finish(launch_ranks(lm_command(tmp_path, corpus, "resumed", "train.epochs=2", "--resume",
                                   str(checkpoints[-1]))))
    assert metrics(tmp_path, "resumed") == metrics(tmp_path, "straight")
