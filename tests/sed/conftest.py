"""A tiny synthetic DCASE2018-layout set shared by the sed tests (generated once per session)."""
import pytest

from common.config import REPO_ROOT
from sed.synth import generate

DEMO_CONFIG = str(REPO_ROOT / "sed" / "configs" / "demo.yaml")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("sed_data") / "synth", train_clips=24, test_clips=6, eval_clips=6,
                    sample_rate=16000, seed=7)


@pytest.fixture(scope="session")
def unlabelled_root(tmp_path_factory):
    """The tiny set plus 10 unlabelled in-domain clips (mean teacher, pseudo-labels)."""
    return generate(tmp_path_factory.mktemp("sed_unlabelled_data") / "synth", train_clips=24, test_clips=6,
                    eval_clips=6, sample_rate=16000, seed=7, unlabelled_clips=10)


@pytest.fixture
def course_copy():
    """course_copy(root, tmp_path, class_lines) -> a copy of the generated set `root` rearranged as the
    course's folder: label/ instead of metadata/, no test split, the given class_label_indices.txt lines."""
    return _course_copy


def _course_copy(root, tmp_path, class_lines):
    import shutil
    course = tmp_path / "course"
    shutil.copytree(root / "audio", course / "audio", ignore=shutil.ignore_patterns("test"))
    for split, csv in (("train", "weak.csv"), ("eval", "eval.csv")):
        (course / "label" / split).mkdir(parents=True)
        shutil.copy(root / "metadata" / split / csv, course / "label" / split / csv)
    (course / "label" / "class_label_indices.txt").write_text("".join(f"{line}\n" for line in class_lines))
    return course


def _tiny_args(data_root, run_root, name, *extra):
    """The demo config shrunk to seconds: 24 weak clips, a 2-block 4-channel CRNN, 2 epochs."""
    return ["--config", DEMO_CONFIG, f"data.root={data_root}", "data.synth.enabled=false", "data.workers=1",
            "features.hop_ms=80", "model.conv_channels=[4,4]", "model.freq_pool=[8,8]", "model.time_pool=[2,1]",
            "model.rnn_hidden=8", "train.epochs=2", "train.batch_size=8", "postprocess.sweep_thresholds=[0.3,0.5]",
            "postprocess.sweep_median_s=[0.0]", "postprocess.timeline_clips=1",
            f"run.root={run_root}", f"run.name={name}", *extra]


@pytest.fixture(scope="session")
def tiny_args():
    """tiny_args(data_root, run_root, run_name, *overrides) -> train.py's argv."""
    return _tiny_args


@pytest.fixture
def train_error(capsys):
    """train_error(argv) -> the one `error:` line with which sed.train stops (exit status 2) on argv."""
    def check(argv: list[str]) -> str:
        from sed import train
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            train.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        return err[0]
    return check


@pytest.fixture
def signal_after():
    """signal_after(steps) -> a PreemptionFlag whose signal "arrives" at the `steps`-th step boundary
    (monkeypatch it into sed.train)."""
    return _signal_after


def _signal_after(steps: int):
    from common.preemption import PreemptionFlag

    class SignalAfter(PreemptionFlag):
        checks = 0

        @property
        def requested(self):
            SignalAfter.checks += 1
            return SignalAfter.checks >= steps

        @requested.setter
        def requested(self, value):
            pass

    return SignalAfter
