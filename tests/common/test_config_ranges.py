"""Settings that cannot work stop every project's real train.py with one `error:` line and exit
status 2 while the config is parsed, before any data is read; the shipped configs stay in range.
Also the benchmarks' seed lists."""
import argparse
import importlib

import pytest

import common.config
from common.config import REPO_ROOT, int_list, load_config

PROJECTS = ["lm", "valle_tts", "vae", "sed", "captioning", "av_scene"]
BATCH_SIZE = {"lm": "train.batch_size", "valle_tts": "data.max_batch_s", "vae": "train.batch_size",
              "sed": "train.batch_size", "captioning": "train.batch_size", "av_scene": "data.batch_size"}
# batch size 0 and a learning rate of 0 or below in every project, plus the other reported cases
CASES = [(p, f"{BATCH_SIZE[p]}=0", f"{BATCH_SIZE[p]}=0 must be {'> 0' if p == 'valle_tts' else '>= 1'}")
         for p in PROJECTS]
CASES += [(p, f"train.lr={lr}", f"train.lr={lr} must be > 0") for p, lr in zip(PROJECTS, [0, -1e-3] * 3)]
CASES += [("sed", "data.valid_fraction=0", "data.valid_fraction=0 must be in (0, 1)"),
          ("av_scene", "data.valid_fraction=1", "data.valid_fraction=1 must be in (0, 1)"),
          ("lm", "model.dropout=1.5", "model.dropout=1.5 must be in [0, 1)")]


@pytest.mark.parametrize("project, override, message", CASES, ids=[f"{p}-{o}" for p, o, _ in CASES])
def test_impossible_setting_is_one_line_at_parsing(project, override, message, tmp_path, monkeypatch, capsys):
    train = importlib.import_module(f"{project}.train")

    def parse_only(*args, **kwargs):  # a config that parses would go on to read data and train
        common.config.parse_args(*args, **kwargs)
        pytest.fail(f"{project}: {override} was accepted")
    monkeypatch.setattr(train, "parse_args", parse_only)
    with pytest.raises(SystemExit) as exit_:
        train.main(["--config", str(REPO_ROOT / project / "configs" / "demo.yaml"), f"run.root={tmp_path}", override])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


CONFIGS = sorted(path for project in PROJECTS for path in (REPO_ROOT / project / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_shipped_config_is_in_range(path):
    project = path.parent.parent.name
    if path.name == "extract.yaml":
        schema = importlib.import_module(f"{project}.extract_features").ExtractConfig
    else:
        schema = importlib.import_module(f"{project}.train").Config
    load_config(schema, path)


def test_seed_lists_are_one_token_so_overrides_may_follow():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(["--seeds", "0,3", "run.cpu_threads=2"])
    assert args.seeds == [0, 3] and args.overrides == ["run.cpu_threads=2"]
    with pytest.raises(argparse.ArgumentTypeError, match="integers separated by commas"):
        int_list("0 1")
