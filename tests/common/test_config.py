import dataclasses
import subprocess
import sys
from typing import Literal

import pytest
import yaml

from common.config import ConfigError, RunConfig, bounded, load_config, parse_args, save_config


@dataclasses.dataclass
class Model:
    hidden: int = 200
    dropout: float = 0.1
    kind: Literal["lstm", "gru"] = "lstm"
    layers: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    tie: bool = True
    name: str | None = None


@dataclasses.dataclass
class Schema:
    model: Model = dataclasses.field(default_factory=Model)
    lr: float = 1.0
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


@dataclasses.dataclass
class Train:
    batch_size: int = bounded(32, ge=1)
    lr: float = bounded(1e-3, gt=0)
    dropout: float = bounded(0.1, ge=0, lt=1)
    clip: float = bounded(0.0, ge=0)  # 0: off
    top_p: float = bounded(1.0, gt=0, le=1)
    betas: list[float] = bounded([0.9, 0.999], ge=0, lt=1)
    limit: int | None = bounded(None, ge=1)


@dataclasses.dataclass
class RangedSchema:
    train: Train = dataclasses.field(default_factory=Train)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_file_then_overrides_win(tmp_path):
    path = write(tmp_path, "model:\n  hidden: 650\n  kind: gru\nlr: 20\n")
    cfg = load_config(Schema, path, ["model.dropout=0.5", "lr=3e-4", "model.layers=[3,4]", "run.seed=7"])
    assert cfg.model.hidden == 650 and cfg.model.kind == "gru"
    assert cfg.model.dropout == 0.5 and cfg.lr == 3e-4 and isinstance(cfg.lr, float)
    assert cfg.model.layers == [3, 4] and cfg.run.seed == 7
    assert cfg.model.tie is True  # untouched defaults survive a partial section


def test_int_is_accepted_for_float_and_null_for_optional(tmp_path):
    cfg = load_config(Schema, None, ["lr=2", "model.name=null", "model.name=abc"])
    assert cfg.lr == 2.0 and cfg.model.name == "abc"


@pytest.mark.parametrize("override, message", [
    (["model.hiden=3"], "unknown config key model.hiden; did you mean model.hidden?"),
    (["modle.hidden=3"], "unknown config key modle.hidden; did you mean model?"),
    (["model.hidden=abc"], "model.hidden: expected an integer, got 'abc'"),
    (["model.tie=maybe"], "model.tie: expected true or false, got 'maybe'"),
    (["model.kind=rnn"], "model.kind: expected one of ['lstm', 'gru'], got 'rnn'"),
    (["lr"], "override 'lr' must look like key.sub=value"),
    (["lr.x=1"], "unknown config key lr.x: lr is not a section"),
])
def test_override_errors_are_one_clear_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(Schema, None, override)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size=0 must be >= 1"),
    ("train.lr=0", "train.lr=0 must be > 0"),
    ("train.lr=-1e-3", "train.lr=-1e-3 must be > 0"),
    ("train.lr=nan", "train.lr=nan must be > 0"),
    ("train.dropout=1", "train.dropout=1 must be in [0, 1)"),
    ("train.dropout=-0.1", "train.dropout=-0.1 must be in [0, 1)"),
    ("train.top_p=0", "train.top_p=0 must be in (0, 1]"),
    ("train.betas=[0.9,1.0]", "train.betas[1]=1.0 must be in [0, 1)"),
    ("train.limit=0", "train.limit=0 must be >= 1"),
    ("run.seed=-1", "run.seed=-1 must be in [0, 4294967296)"),
])
def test_value_out_of_range_is_one_line_naming_key_value_and_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(Schema if override.startswith("run.") else RangedSchema, None, [override])
    assert str(err.value) == message


def test_range_bounds_are_allowed_and_checked_in_files_too(tmp_path):
    cfg = load_config(RangedSchema, None, ["train.batch_size=1", "train.dropout=0", "train.clip=0",
                                           "train.top_p=1", "train.betas=[0,0.5]", "train.limit=null"])
    assert (cfg.train.batch_size, cfg.train.dropout, cfg.train.clip, cfg.train.top_p) == (1, 0.0, 0.0, 1.0)
    assert cfg.train.betas == [0.0, 0.5] and cfg.train.limit is None
    with pytest.raises(ConfigError, match=r"^train.batch_size=0 must be >= 1$"):
        load_config(RangedSchema, write(tmp_path, "train:\n  batch_size: 0\n"))


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(Schema, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown config key model.hiddn; did you mean model.hidden"):
        load_config(Schema, write(tmp_path, "model:\n  hiddn: 3\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Schema, write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Schema, write(tmp_path, "- a\n- b\n"))


def test_saved_config_loads_back_identical(tmp_path):
    cfg = load_config(Schema, None, ["model.hidden=3", "run.name=x"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Schema, tmp_path / "saved.yaml") == cfg
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["model"]["hidden"] == 3


def test_parse_args_resume_forms():
    _, args = parse_args(Schema, ["--resume"])
    assert args.resume == "latest"
    _, args = parse_args(Schema, ["--resume", "x.pt", "lr=2"])
    assert args.resume == "x.pt"
    _, args = parse_args(Schema, ["lr=2"])
    assert args.resume is None


def test_cli_prints_one_line_and_exits_2(tmp_path):
    toy = "tests/common/toy_train.py"
    result = subprocess.run([sys.executable, toy, "run.nme=x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown config key run.nme; did you mean run.name?"
    assert "Traceback" not in result.stderr
