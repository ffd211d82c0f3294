"""Start-up time of each pipeline: `python -c "import X.train"` against `python -c "import torch"`,
fresh interpreters run in alternation (torch, then every project, repeated), medians reported.

    python -m common.startup_benchmark [--repeats 7] [--projects lm vae ...]

The target is a ratio of at most 1.3: a training job should not wait for libraries it only needs
for figures, metrics or pretrained encoders (those are imported inside the functions that use them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PROJECTS = ("lm", "valle_tts", "vae", "sed", "captioning", "av_scene")


def import_seconds(module: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--projects", nargs="+", default=list(PROJECTS), choices=PROJECTS)
    args = parser.parse_args(argv)
    modules = ["torch"] + [f"{project}.train" for project in args.projects]
    import_seconds("torch")   # warm the file cache once
    seconds = {module: [] for module in modules}
    for _ in range(args.repeats):
        for module in modules:
            seconds[module].append(import_seconds(module))
    medians = {module: statistics.median(times) for module, times in seconds.items()}
    report = {module: {"median_s": round(median, 2), "over_torch": round(median / medians["torch"], 2)}
              for module, median in medians.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
