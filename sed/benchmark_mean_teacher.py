"""Supervised-only against mean teacher and against a pseudo-label second pass, on the same weak
clips: trains each for each seed, evaluates each best.pt, and prints eval event F1, segment F1 and
tagging F1 (macro) as mean ± std over the seeds.

    python -m sed.benchmark_mean_teacher [--config sed/configs/demo_mean_teacher.yaml] [--seeds 0,1,2] [key=value ...]

The config (a mean-teacher one) fixes the data and the model. The supervised runs use the same weak
clips per batch and the same number of steps (batch = the mean-teacher batch's weak part), so the two
differ only in the unlabelled clips and the consistency loss. The pseudo-label run of a seed trains a
new model (train.method=supervised) on the weak clips plus the unlabelled clips that seed's supervised
model tags (train.pseudo_labels_from), with the mean-teacher batch size and --pseudo-epochs epochs:
at the demo_mean_teacher settings (48 weak train clips + up to 600 tagged, 24 clips a step) 14 epochs
are about the 360 steps of the other two. Overrides apply to every method. Runs go to
runs/sed/<name>/<method>-seed<k>; a finished run is evaluated again, not retrained.
"""
from __future__ import annotations

import argparse
import json

from common.config import REPO_ROOT, cli_main, int_list, load_config
from common.log import mean_std
from common.run import is_finished
from sed import evaluate, train
from sed.config import Config

METRICS = {"eval_event_f1_macro": "event F1", "eval_segment_f1_macro": "segment F1", "eval_tag_f1_macro": "tagging F1"}


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "sed" / "configs" / "demo_mean_teacher.yaml"))
    parser.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--name", default="bench_mt", help="runs go to runs/sed/<name>/<method>-seed<k>")
    parser.add_argument("--pseudo-epochs", type=int, default=14, help="epochs of the pseudo-label second pass")
    parser.add_argument("overrides", nargs="*", help="key.sub=value changes for every method")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    cfg = load_config(Config, args.config, args.overrides)
    weak_per_batch = cfg.train.batch_size - round(cfg.train.batch_size * cfg.train.mean_teacher.unlabelled_fraction)
    runs = REPO_ROOT / cfg.run.root / "sed" / args.name
    methods = {"supervised": ["train.method=supervised", f"train.batch_size={weak_per_batch}"],
               "mean_teacher": ["train.method=mean_teacher"],
               "pseudo_labels": ["train.method=supervised", f"train.epochs={args.pseudo_epochs}"]}
    scores = {method: [] for method in methods}
    for seed in args.seeds:
        for method, switches in methods.items():
            name = f"{args.name}/{method}-seed{seed}"
            run_dir = runs / f"{method}-seed{seed}"
            if method == "pseudo_labels":
                switches = switches + [f"train.pseudo_labels_from={runs / f'supervised-seed{seed}'}"]
            argv = ["--config", args.config, *args.overrides, *switches, f"run.seed={seed}", f"run.name={name}"]
            if not is_finished(run_dir):
                train.main(argv + (["--resume"] if run_dir.is_dir() else []))
            evaluate.main([str(run_dir)])
            scores[method].append(json.loads((run_dir / "summary.json").read_text())["metrics"])
    print(f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}); eval split, macro F1, mean ± std\n")
    print("| method | " + " | ".join(METRICS.values()) + " |")
    print("|---|" + "---|" * len(METRICS))
    for method, results in scores.items():
        cells = []
        for key in METRICS:
            cells.append(mean_std([run[key] for run in results], 3))
        print(f"| {method} | " + " | ".join(cells) + " |")
    per_seed = (f"{method} " + ", ".join(f"{run['eval_event_f1_macro']:.3f}" for run in results)
                for method, results in scores.items())
    print("\nper seed (event F1): " + "; ".join(per_seed))


if __name__ == "__main__":
    main()
