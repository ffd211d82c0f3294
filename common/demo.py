"""`make demo`: train and evaluate every pipeline's demo config, one after another, then print one
table (project, model, headline metrics, wall time, run folder).

A project takes part once it has `<project>/configs/demo.yaml`. Its train.py writes the run
folder runs/<project>/demo/; its evaluate.py reads that folder and writes summary.json
(common.run.write_summary), whose model name and metrics fill the table.
"""
from __future__ import annotations

import subprocess
import sys
import time

from common.config import REPO_ROOT
from common.run import clear_run_dir, read_summary

PROJECTS = ["lm", "vae", "sed", "captioning", "av_scene", "valle_tts"]
# The metrics the table shows (summary.json holds more; all are shown when one of these is missing).
HEADLINE = {"lm": ["test_ppl", "optimal_test_ppl"],
            "vae": ["valid_neg_elbo", "valid_nll", "valid_bce"],
            "sed": ["eval_event_f1_macro", "eval_segment_f1_macro", "eval_tag_f1_macro", "eval_mAP"],
            "captioning": ["test_bleu4", "test_meteor", "test_cider"],
            "av_scene": ["test_accuracy", "test_log_loss"],
            "valle_tts": ["valid_ar_top10_cb1", "stop_rate_continuation", "rtf"]}


def run_demo(project: str) -> dict:
    run_dir = REPO_ROOT / "runs" / project / "demo"
    clear_run_dir(run_dir)  # the demo always starts fresh
    config = f"{project}/configs/demo.yaml"
    start = time.time()
    for command in ([sys.executable, "-m", f"{project}.train", "--config", config, "run.name=demo"],
                    [sys.executable, "-m", f"{project}.evaluate", str(run_dir)]):
        print(f"\n$ {' '.join(command[1:])}", flush=True)
        if subprocess.run(command, cwd=REPO_ROOT).returncode != 0:
            return {"project": project, "model": "-", "metrics": "FAILED (see the output above)",
                    "seconds": time.time() - start, "run_dir": run_dir}
    summary = read_summary(run_dir) or {"model": "?", "metrics": {}}
    shown = {k: summary["metrics"][k] for k in HEADLINE.get(project, []) if k in summary["metrics"]}
    if len(shown) < len(HEADLINE.get(project, [])):
        shown = summary["metrics"]
    metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
    return {"project": project, "model": summary["model"], "metrics": metrics or "(no summary.json)",
            "seconds": time.time() - start, "run_dir": run_dir}


def main() -> int:
    present = [p for p in PROJECTS if (REPO_ROOT / p / "configs" / "demo.yaml").is_file()]
    if not present:
        print("No pipeline has landed yet (no <project>/configs/demo.yaml): nothing to demo.")
        return 0
    rows = [run_demo(p) for p in present]
    header = ["project", "model", "headline metrics", "wall time", "run folder"]
    table = [[r["project"], r["model"], r["metrics"], f"{r['seconds']:.0f} s",
              str(r["run_dir"].relative_to(REPO_ROOT))] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *table)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print("\n" + line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in table:
        print(line(cells))
    missing = [p for p in PROJECTS if p not in present]
    if missing:
        print(f"\nNot landed yet: {', '.join(missing)}")
    return 1 if any("FAILED" in r["metrics"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
