"""Two or more recipes at equal training time: each config trains in its own process, all side by
side (so a busy machine slows them alike), stopping at every budget of --minutes in turn
(`train.max_minutes`, then `--resume` with the next budget: one continuous run, evaluated at each
stop). Prints best valid and test perplexity over training time as a markdown table.

    python -m lm.equal_time --configs lm/configs/cpu_lstm.yaml lm/configs/cpu_transformer.yaml \
        --minutes 5 10 15 --root runs/lm_equal_time data.dir=../shared/data/ptb

Per-config overrides go after `--set-for NAME`, e.g. `--set-for cpu_transformer train.epochs=2`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common.config import REPO_ROOT


def run_budgets(config: str, minutes: list[float], root: Path, overrides: list[str]) -> subprocess.Popen:
    """One shell process that runs the config's budgets one after the other."""
    name = Path(config).stem
    stages = []
    for i, budget in enumerate(minutes):
        resume = " --resume" if i else ""
        stages.append(f"{sys.executable} -m lm.train --config {config} run.root={root} run.name={name} "
                      f"train.max_minutes={budget} {' '.join(overrides)}{resume} && "
                      f"cp {root}/lm/{name}/summary.json {root}/lm/{name}/summary_{budget:g}min.json")
    log = open(root / f"{name}.log", "w")
    return subprocess.Popen(" && ".join(stages), shell=True, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--minutes", nargs="+", type=float, required=True, help="increasing training budgets")
    parser.add_argument("--root", default="runs/lm_equal_time")
    parser.add_argument("--set-for", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                        help="overrides for one config only (NAME: the config file's stem)")
    parser.add_argument("overrides", nargs="*", help="key=value for every config")
    args = parser.parse_args(argv)
    root = (REPO_ROOT / args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    per_config = {items[0]: items[1:] for items in args.set_for}
    jobs = {Path(c).stem: run_budgets(c, args.minutes, root, args.overrides + per_config.get(Path(c).stem, []))
            for c in args.configs}
    failed = [name for name, job in jobs.items() if job.wait() != 0]
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed; see {root}/<name>.log")
    print("| config | budget (min) | epochs | steps | best valid PPL | its test PPL |")
    print("|---|---|---|---|---|---|")
    for name in jobs:
        for budget in args.minutes:
            summary = json.loads((root / "lm" / name / f"summary_{budget:g}min.json").read_text())
            print(f"| {name} ({summary['params']:,} params) | {budget:g} | {summary['epochs']} | {summary['steps']} | "
                  f"{summary['metrics']['valid_ppl']:.1f} | {summary['metrics']['test_ppl']:.1f} |")


if __name__ == "__main__":
    main()
