"""One table from several evaluated runs - the course's comparison: English 100 h / 360 h / 960 h,
Mandarin (AISHELL-3), codec A vs B.

    python -m valle_tts.table runs/valle_tts/base_100h runs/valle_tts/base_360h runs/valle_tts/base_960h \\
        runs/valle_tts/base_100h_vocos runs/valle_tts/aishell3 [--out results.md]

Reads each run's summary.json (written by valle_tts.evaluate) and prints a Markdown table, a row per
run with its language and codec. The error columns are WER for English and CER for Mandarin (the
language column says which). A run scored with a random-weight codec or random-weight scorers says
so in its row: its numbers only show that the code ran.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.config import ConfigError, cli_main
from common.run import read_summary

# (metric key, title, scale); "err" is wer (English) or cer (Mandarin)
COLUMNS = [("err_continuation", "WER/CER cont. %", 100), ("err_cross", "WER/CER cross %", 100),
           ("sim_continuation", "SIM cont.", 1), ("sim_cross", "SIM cross", 1), ("sim_ground_truth", "SIM GT", 1),
           ("err_ground_truth", "WER/CER GT %", 100), ("err_codec_resynthesis", "WER/CER codec %", 100),
           ("cap_rate_cross", "capped cross", 1), ("loop_rate_cross", "loops cross", 1),
           ("length_ratio_cross", "len/exp cross", 1), ("rtf", "RTF", 1)]
SIMILARITY_NOTE = ("SIM: cosine of ECAPA-TDNN speaker embeddings (eval.speaker_model). The VALL-E paper's "
                   "similarity (about 0.58) was measured with a WavLM-TDNN speaker verifier: another scale, "
                   "not comparable with these numbers.")


def caveats(summary: dict) -> str:
    """What makes a run's numbers meaningless as speech quality, '' when nothing does."""
    found = (["random codec"] if summary.get("codec_pretrained") is False else []) + \
        (["random scorers"] if summary.get("random_scorers") is True else [])
    return ", ".join(found)


def collect(run_dirs: list[str | Path]) -> str:
    """Markdown table, one row per run (missing numbers shown as '-'), then the similarity note."""
    header = ["run", "caveats", "language", "codec", "training data", "params"] + [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        if summary is None:
            raise ConfigError(f"{run_dir} has no summary.json; run python -m valle_tts.evaluate {run_dir} first")
        language = summary.get("language", "en")  # runs evaluated before Mandarin existed are English
        error = "cer" if language == "zh" else "wer"
        metrics = {key.replace(error, "err", 1) if key.startswith(error) else key: value
                   for key, value in summary["metrics"].items()}
        cells = [Path(run_dir).name, caveats(summary) or "-", language, summary.get("codec", "encodec"),
                 "+".join(summary.get("train_parts") or ["?"]),
                 f"{summary['params'] / 1e6:.1f}M" if summary.get("params") else "-"]
        cells += [f"{metrics[key] * scale:.2f}" if metrics.get(key) is not None else "-" for key, _, scale in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + SIMILARITY_NOTE + "\n"


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
