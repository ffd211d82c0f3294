"""Hyper-parameter grid: every combination of the given values, one run each, one results table.

    python -m common.sweep --config lm/configs/lstm.yaml --grid model.hidden=200,400,650 train.lr=10,20
    python -m common.sweep --config lm/configs/lstm.yaml --grid ... --slurm   # a Slurm job array instead

Each grid point is `python -m <project>.train --config C run.name=<study>-<point> <overrides>
--resume` then `python -m <project>.evaluate runs/<project>/<name>`; --resume makes a re-run of the
same sweep continue unfinished points and skip finished ones. The table (markdown + CSV) is built
from every point's summary.json: runs/<project>/sweeps/<study>.md and .csv.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import subprocess
import sys
from pathlib import Path

import yaml

from common.config import REPO_ROOT, ConfigError, cli_main, resolve_path
from common.run import flat_settings, read_summary


def parse_grid(items: list[str]) -> list[list[str]]:
    """['a=1,2', 'b=x'] -> [['a=1', 'b=x'], ['a=2', 'b=x']] (lists in brackets stay whole)."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid item {item!r} must look like key=v1,v2,...")
        if values.startswith("["):
            choices = [values]
        else:
            choices = values.split(",")
        axes.append([f"{key}={v}" for v in choices])
    return [list(point) for point in itertools.product(*axes)]


def point_name(study: str, point: list[str]) -> str:
    parts = [f"{kv.split('=')[0].split('.')[-1]}{kv.split('=', 1)[1]}" for kv in point]
    return "-".join([study, *parts]).replace("/", "_").replace(" ", "")


def write_table(rows: list[dict], out_stem: Path) -> str:
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    with open(out_stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    out_stem.with_suffix(".md").write_text(table)
    return table


def _same(saved, requested: str) -> bool:
    """A saved config value against the command-line text that asked for it (`1e-3` is 0.001)."""
    parsed = yaml.safe_load(requested)
    if parsed == saved:
        return True
    try:
        return float(requested) == float(saved)
    except (TypeError, ValueError):
        return False


def settings_mismatch(run_dir: Path, requested: list[str]) -> list[str]:
    """The requested key=value settings that the run folder's config.yaml does not have: a run
    trained earlier with other settings must not be reported as this point."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return []
    saved = flat_settings(yaml.safe_load(saved_path.read_text()))
    wanted = dict(kv.split("=", 1) for kv in requested)
    return [f"{key} is {saved[key]!r}, not {value}" for key, value in wanted.items()
            if key in saved and not _same(saved[key], value)]


def collect(project: str, runs_root: Path, names: list[str], points: list[list[str]],
            fixed: list[str] = ()) -> list[dict]:
    rows = []
    for name, point in zip(names, points):
        row = {"run": name, **{kv.split("=")[0]: kv.split("=", 1)[1] for kv in point}}
        run_dir = runs_root / project / name
        summary = read_summary(run_dir)
        mismatch = settings_mismatch(run_dir, [*point, *fixed])
        if mismatch:
            row["status"] = f"NOT this point: {run_dir} was trained with other settings ({'; '.join(mismatch)})"
            print(f"warning: {row['status']}; use another --name for the new study", file=sys.stderr)
        elif summary is None:
            row["status"] = "no summary.json (failed or not run yet)"
        else:
            row["model"] = summary.get("model", "")
            row.update({k: v for k, v in summary.items() if k not in ("model", "metrics")
                        and isinstance(v, (int, float, str))})
            row.update(summary.get("metrics", {}))
        rows.append(row)
    return rows


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="base config, e.g. lm/configs/lstm.yaml")
    parser.add_argument("--grid", nargs="+", required=True, help="key=v1,v2,... (one per axis)")
    parser.add_argument("--set", nargs="*", default=[], help="fixed key=value overrides for every point")
    parser.add_argument("--name", help="study name (default: the config's name)")
    parser.add_argument("--project", help="project package (default: the config's folder, e.g. lm)")
    parser.add_argument("--runs-root", default="runs")
    parser.add_argument("--slurm", action="store_true", help="write a points file and submit a job array")
    parser.add_argument("--collect", action="store_true", help="only build the table from finished points")
    args = parser.parse_args(argv)

    config = resolve_path(args.config)
    if not config.is_file():
        raise ConfigError(f"config file not found: {args.config}")
    project = args.project or config.parent.parent.name
    study = args.name or config.stem
    runs_root = resolve_path(args.runs_root)
    points = parse_grid(args.grid)
    names = [point_name(study, p) for p in points]
    out_stem = runs_root / project / "sweeps" / study

    if args.slurm:
        points_file = out_stem.with_suffix(".points")
        points_file.parent.mkdir(parents=True, exist_ok=True)
        points_file.write_text("".join(f"{n} {' '.join(p + args.set)}\n" for n, p in zip(names, points)))
        command = ["sbatch", f"--array=0-{len(points) - 1}%1", str(REPO_ROOT / "slurm" / "sweep_array.sh"),
                   project, str(config), str(points_file)]
        print("$ " + " ".join(command))
        subprocess.run(command, check=True)
        print(f"when the array is done: python -m common.sweep --config {args.config} "
              f"--grid {' '.join(args.grid)} --collect")
        return 0

    failed = 0
    for name, point in zip(names, points) if not args.collect else []:
        print(f"\n=== {name}: {' '.join(point)}", flush=True)
        train = [sys.executable, "-m", f"{project}.train", "--config", str(config), f"run.name={name}",
                 f"run.root={runs_root}", *point, *args.set, "--resume"]
        evaluate = [sys.executable, "-m", f"{project}.evaluate", str(runs_root / project / name)]
        if subprocess.run(train).returncode != 0 or subprocess.run(evaluate).returncode != 0:
            failed += 1
    table = write_table(collect(project, runs_root, names, points, args.set), out_stem)
    print("\n" + table + f"\nwritten: {out_stem.with_suffix('.md')} and .csv")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
