"""YAML config + `key.sub=value` command-line overrides, typed and validated by a dataclass schema.

    cfg, args = parse_args(Config, project="lm")   # python train.py --config c.yaml model.hidden=650

Every user mistake (unknown key, wrong type, a value out of its range, missing file) raises
`ConfigError` with one line that says what, where and how to fix it; `cli_main` prints that line
and exits with status 2. A schema states a field's range where it declares the field:

    batch_size: int = bounded(32, ge=1)            # error: train.batch_size=0 must be >= 1
    dropout: float = bounded(0.1, ge=0, lt=1)      # error: model.dropout=1 must be in [0, 1)
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import functools
import operator
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A user mistake in a config, a command line or an input path (printed as one line)."""


_COMPARISONS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"),
                "le": (operator.le, "<="), "lt": (operator.lt, "<")}


def bounded(default, *, ge=None, gt=None, le=None, lt=None):
    """A schema field whose value must lie in a range, checked when the config is parsed (ge: >=,
    gt: >, le: <=, lt: <): `lr: float = bounded(1e-3, gt=0)`. A list's items must each lie in it:
    `betas: list[float] = bounded([0.9, 0.999], ge=0, lt=1)`. None passes (an optional field)."""
    assert (ge is None or gt is None) and (le is None or lt is None), "one lower and one upper bound at most"
    limits = {name: bound for name, bound in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if bound is not None}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"range": limits})
    return dataclasses.field(default=default, metadata={"range": limits})


def _range_text(limits: dict) -> str:
    """{"ge": 0, "lt": 1} -> "in [0, 1)"; {"ge": 1} -> ">= 1" (limits hold the lower bound first)."""
    if len(limits) == 2:
        (low_name, low), (high_name, high) = limits.items()
        return f"in {'[' if low_name == 'ge' else '('}{low}, {high}{']' if high_name == 'le' else ')'}"
    (name, bound), = limits.items()
    return f"{_COMPARISONS[name][1]} {bound}"


def _check_range(value: Any, given: Any, limits: dict, key: str) -> None:
    """`value` (coerced; a list checks each item) against a `bounded` field's limits; the error
    shows the value as the user gave it. NaN fails every comparison, so it is out of every range."""
    items = [(f"{key}[{i}]", v, g) for i, (v, g) in enumerate(zip(value, given))] \
        if isinstance(value, list) else [(key, value, given)]
    for name, item, shown in items:
        if item is not None and not all(_COMPARISONS[op][0](item, bound) for op, bound in limits.items()):
            raise ConfigError(f"{name}={shown} must be {_range_text(limits)}")


@dataclasses.dataclass
class RunConfig:
    """Settings every project shares: where the run goes, seeding, device and checkpoints."""
    name: str = "default"                           # run folder: <root>/<project>/<name>/
    root: str = "runs"                              # relative paths are relative to the repository root
    seed: int = bounded(0, ge=0, lt=2**32)          # numpy's seed range
    deterministic: bool = False                     # deterministic kernels (slower on GPU)
    device: str = "auto"                            # auto | cpu | cuda | cuda:N
    amp: bool = True                                # autocast on GPU: fp16 + grad scaler on V100, bf16 on Ampere+
    checkpoint_every_steps: int = bounded(0, ge=0)  # also checkpoint every N optimizer steps (0: end of epoch only)
    keep_last: int = bounded(2, ge=1)               # step checkpoints kept besides best.pt
    cpu_threads: int = bounded(0, ge=0)             # torch CPU threads (0: torch's default); 1 is fastest for tiny
                                                    # models on a busy CPU, where threads wait for each other


def resolve_path(path: str | Path) -> Path:
    """Config paths: absolute, or relative to the current directory if it exists there, otherwise
    relative to the repository root (so configs work from the root and from a project folder)."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return REPO_ROOT / path


def text_lines(path: Path):
    """(line number, line without its newline) of a user's UTF-8 text file, decoded line by line so
    that bytes in another encoding are one error naming the file, line and column, and the fix."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                yield line_no, raw.decode("utf-8").rstrip("\n\r")
            except UnicodeDecodeError as err:
                column = len(raw[:err.start].decode("utf-8")) + 1
                raise ConfigError(f"{path}:{line_no}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                                  f"{column}); re-encode the file, e.g. from Latin-1: iconv -f latin1 -t utf-8 "
                                  f"{path} > {path}.utf8 && mv {path}.utf8 {path}") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where YAML is looser (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like [1, 2], got {value!r}")
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return _build(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)} in the schema")


def _build(schema: type, values: dict, prefix: str = ""):
    """Instantiate dataclass `schema` from a nested dict, rejecting unknown keys."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else \
                f"; valid keys: {', '.join(prefix + k for k in fields)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
        if "range" in fields[key].metadata:
            _check_range(kwargs[key], value, fields[key].metadata["range"], prefix + key)
    for name, f in fields.items():
        if name in kwargs:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {prefix}{name}")
    return schema(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _set_nested(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def load_config(schema: type, path: str | Path | None, overrides: list[str] = ()):
    """Defaults of `schema` <- YAML file <- `key.sub=value` overrides; returns a validated instance."""
    tree = to_dict(schema())
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file} (give a path like configs/demo.yaml)")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {file}{where} is not valid YAML: "
                              f"{getattr(err, 'problem', err)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping of keys, not {type(loaded).__name__}")
        _merge(tree, loaded, schema)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. model.hidden=650)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _check_key(schema, key)
        _set_nested(tree, key, value)
    return _build(schema, tree)


def _merge(tree: dict, loaded: dict, schema: type, prefix: str = "") -> None:
    """Deep-merge a YAML mapping into the defaults (sections merge, leaves replace)."""
    for key, value in loaded.items():
        _check_key(schema, prefix + key)
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value, schema, prefix + key + ".")
        else:
            tree[key] = value


def _check_key(schema: type, dotted: str) -> None:
    node = schema
    walked = ""
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"unknown config key {dotted}: {walked.rstrip('.')} is not a section")
        hints = typing.get_type_hints(node)
        if part not in hints:
            close = difflib.get_close_matches(part, list(hints), n=1)
            hint = f"; did you mean {walked}{close[0]}?" if close else \
                f"; valid keys: {', '.join(walked + k for k in hints)}"
            raise ConfigError(f"unknown config key {dotted}{hint}")
        node = hints[part]
        walked += part + "."


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def int_list(text: str) -> list[int]:
    """argparse type for `--seeds 0,1,2`: one token, so that key=value overrides may follow the option."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 0,1,2; got {text!r}") from None


def parse_args(schema: type, argv: list[str] | None = None, description: str = ""):
    """`--config FILE [--resume [CKPT]] [key=value ...]` -> (validated config, argparse namespace)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config file (defaults of the schema if omitted)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="continue from CKPT, or from the run folder's latest checkpoint")
    parser.add_argument("overrides", nargs="*", help="key.sub=value settings that win over the file")
    args = parser.parse_args(argv)
    cfg = load_config(schema, args.config, args.overrides)
    return cfg, args


def cli_main(main):
    """Decorator for a script's main(): a ConfigError becomes one `error:` line and exit status 2."""
    @functools.wraps(main)
    def wrapper(*a, **kw):
        try:
            return main(*a, **kw)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            print(f"error: no space left on device while writing {err.filename or 'a file'}; free some space, "
                  f"then rerun (training runs continue with --resume)", file=sys.stderr)
            sys.exit(2)
    return wrapper
