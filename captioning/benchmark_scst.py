"""Cross-entropy then self-critical training against cross-entropy alone, same total epochs, a few
seeds, on the demo's shapes set: test BLEU-4, METEOR, CIDEr (mean ± std over seeds) and the number
of distinct test captions of each model.

    python -m captioning.benchmark_scst [--seeds 0,1,2] [--xe-epochs 3] [--scst-epochs 2] [key=value ...]
    python -m captioning.benchmark_scst --reward-speed data/flickr8k   # CIDEr-D rewards per second

For each seed, one cross-entropy run of xe + scst epochs is trained (keeping every epoch's
checkpoint); "cross-entropy alone" is that run, and SCST starts from its checkpoint at the end of
epoch xe (what a cross-entropy run of xe epochs would have given: nothing in the demo's schedule
depends on the total). Both are evaluated with the config's decoding (beam 3). Overrides apply to
the SCST runs (e.g. train.lr=5e-4 train.scst_baseline=mean). Runs go to runs/captioning/scst_bench/.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common.config import REPO_ROOT, int_list, resolve_path
from common.log import mean_std

CONFIG = "captioning/configs/demo.yaml"
EVALUATE = ["evaluate.splits=[test]", "evaluate.human_ceiling=false", "evaluate.spice=false",
            "evaluate.attention_figures=0"]


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run([sys.executable, "-m", *command], check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)


def test_results(run_dir) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())["metrics"]
    captions = json.loads((run_dir / "captions_test.json").read_text())
    return {"BLEU-4": summary["test_bleu4"], "METEOR": summary["test_meteor"], "CIDEr": summary["test_cider"],
            "distinct captions": len({c["caption"] for c in captions})}


def reward_speed(folder) -> None:
    """CIDEr-D rewards per second on the Flickr8k training captions: every training image's five
    references stand in for its five samples (one SCST epoch, in batches of 32 images), scored by
    scst.CiderD and, for comparison, by pycocoevalcap's Cider in one call."""
    from pycocoevalcap.cider.cider import Cider

    from captioning.data import parse_captions_file, read_image_list, tokenize
    from captioning.scst import CiderD
    captions = parse_captions_file(folder / "Flickr8k.token.txt")
    references = [[" ".join(tokenize(c)) for c in captions[name]]
                  for name in read_image_list(folder / "Flickr_8k.trainImages.txt")]
    started = time.perf_counter()
    cider = CiderD(references)
    built = time.perf_counter() - started
    images = [i for i, refs in enumerate(references) for _ in refs]
    samples = [caption for refs in references for caption in refs]
    started = time.perf_counter()
    for first in range(0, len(samples), 160):
        cider.score_batch(images[first:first + 160], samples[first:first + 160])
    ours = time.perf_counter() - started
    started = time.perf_counter()
    Cider().compute_score({n: references[i] for n, i in enumerate(images)}, {n: [c] for n, c in enumerate(samples)})
    library = time.perf_counter() - started
    print(f"{len(references)} training images: CiderD built in {built:.1f} s; {len(samples)} captions scored at "
          f"{len(samples) / ours:,.0f}/s in batches of 160 "
          f"(pycocoevalcap Cider, one call: {len(samples) / library:,.0f}/s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--xe-epochs", type=int, default=3)
    parser.add_argument("--scst-epochs", type=int, default=2)
    parser.add_argument("--reward-speed", type=resolve_path, metavar="FLICKR8K_DIR",
                        help="only measure CIDEr-D rewards per second on the Flickr8k captions in this folder")
    parser.add_argument("--tag", default="", help="appended to the SCST run names (to compare settings)")
    parser.add_argument("overrides", nargs="*", help="key=value for the SCST runs")
    args = parser.parse_intermixed_args(argv)
    if args.reward_speed:
        return reward_speed(args.reward_speed)
    root = resolve_path("runs") / "captioning" / "scst_bench"
    common = ["--config", CONFIG, f"run.root={root.parent.parent}"]
    results = {"cross-entropy": [], "cross-entropy + SCST": []}
    for seed in args.seeds:
        total = args.xe_epochs + args.scst_epochs
        xe_name = f"xe{total}ep_seed{seed}"
        scst_name = f"scst{args.xe_epochs}+{args.scst_epochs}{args.tag}_seed{seed}"
        xe_dir, scst_dir = root / xe_name, root / scst_name
        if not (xe_dir / "FINISHED").is_file():
            run(["captioning.train", *common, f"run.name=scst_bench/{xe_name}", f"run.seed={seed}",
                 f"train.epochs={total}", "run.keep_last=100", "--resume"])
        start = sorted((xe_dir / "checkpoints").glob("step-*.pt"))[args.xe_epochs - 1]
        if not (scst_dir / "FINISHED").is_file():
            run(["captioning.train", *common, f"run.name=scst_bench/{scst_name}", f"run.seed={seed}",
                 "train.method=scst", f"train.init_from={start}", f"train.epochs={args.scst_epochs}",
                 *args.overrides, "--resume"])
        for run_dir, label in ((xe_dir, "cross-entropy"), (scst_dir, "cross-entropy + SCST")):
            if not (run_dir / "captions_test.json").is_file():
                run(["captioning.evaluate", str(run_dir), *EVALUATE])
            results[label].append(test_results(run_dir))
            print(f"seed {seed} {label}: {results[label][-1]}", flush=True)

    metrics = list(results["cross-entropy"][0])
    print(f"\n| test, {len(args.seeds)} seeds (mean ± std) | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for label, rows in results.items():
        cells = []
        for metric in metrics:
            cells.append(mean_std([row[metric] for row in rows], 1 if metric == "distinct captions" else 4))
        epochs = f"{args.xe_epochs} + {args.scst_epochs}" if "SCST" in label else args.xe_epochs + args.scst_epochs
        print(f"| {label} ({epochs} epochs) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
