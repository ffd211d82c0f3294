"""One table from several evaluated runs - the course's 100 h / 360 h / 960 h comparison.

    python -m valle_tts.table runs/valle_tts/base_100h runs/valle_tts/base_360h runs/valle_tts/base_960h \\
        [--out results.md]

Reads each run's summary.json (written by valle_tts.evaluate) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.config import ConfigError, cli_main
from common.run import read_summary

COLUMNS = [("wer_continuation", "WER cont. %", 100), ("wer_cross", "WER cross %", 100),
           ("sim_continuation", "SIM cont.", 1), ("sim_cross", "SIM cross", 1),
           ("wer_ground_truth", "WER GT %", 100), ("wer_codec_resynthesis", "WER codec %", 100),
           ("rtf", "RTF", 1)]


def collect(run_dirs: list[str | Path]) -> str:
    """Markdown table, one row per run (missing numbers shown as '-')."""
    header = ["run", "training data", "params"] + [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        if summary is None:
            raise ConfigError(f"{run_dir} has no summary.json; run python -m valle_tts.evaluate {run_dir} first")
        metrics = summary["metrics"]
        cells = [Path(run_dir).name, "+".join(summary.get("train_parts") or ["?"]),
                 f"{summary['params'] / 1e6:.1f}M" if summary.get("params") else "-"]
        cells += [f"{metrics[key] * scale:.2f}" if key in metrics else "-" for key, _, scale in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    table = collect(args.runs)
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
