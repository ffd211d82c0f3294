"""Evaluate a trained run: frame probabilities -> events -> the course's metrics, report and figures.

    python -m sed.evaluate runs/sed/<name> [key.sub=value ...]     (or a checkpoint path)

Post-processing is chosen on the strongly labelled test split (a grid of thresholds x median windows;
each class takes its best pair by event F1, which sed_eval computes per class independently) and then
applied unchanged to the eval split, which is never used for choices. Writes into the run folder:
predictions_<split>.tsv (DCASE format), class_wise_<split>.csv, sweep.csv, report.md,
figures/timeline_*.png and summary.json.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import find_checkpoint, load_checkpoint
from common.config import ConfigError, cli_main, load_config
from common.device import amp_dtype, pick_device, set_cpu_threads
from common.params import count_parameters
from common.run import read_summary, write_summary
from sed import metrics
from sed.config import CLASSES, Config
from sed.data import frames_per_clip, hop_seconds, label_matrix, load_features
from sed.mean_teacher import judged_weights, judges_teacher
from sed.models import build_model
from sed.plots import event_timeline
from sed.postprocess import detect_events
from sed.prepare import prepare_data
from sed.train import predict, validate, weak_datasets


class SplitPredictions:
    """Model outputs for one strongly labelled split."""

    def __init__(self, split, cfg, model, mean, std, device, dtype):
        self.filenames = split.filenames
        # every listed clip is scored: one without audio (skipped by prepare) has no detections, so its
        # reference events count as misses instead of leaving the score
        self.reference = dict(split.strong)
        missing = [f for f in split.strong if f not in set(self.filenames)]
        if missing:
            print(f"warning: {split.name}: {len(missing)} of {len(split.strong)} listed clips have no audio "
                  f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); their "
                  f"{sum(len(split.strong[f]) for f in missing)} reference events count as misses")
        self.log_mel, lengths = load_features(split.h5_path, self.filenames, frames_per_clip(cfg.features))
        self.hop_s = hop_seconds(cfg.features)
        self.durations_s = {f: float(cfg.features.clip_s) for f in missing}
        self.durations_s.update({f: float(min((n - 1) * self.hop_s, cfg.features.clip_s))
                                 for f, n in zip(self.filenames, lengths)})
        mels = torch.from_numpy((self.log_mel - mean) / std)
        frame_probs, clip_probs = predict(model, mels, device, dtype=dtype)
        self.frame_probs, self.clip_probs = frame_probs.numpy(), clip_probs.numpy()
        self.targets = label_matrix([split.weak[f] for f in self.filenames])

    def events(self, pp, thresholds, median_frames) -> dict:
        """{filename: [(onset_s, offset_s, label)]} with per-class thresholds and median windows."""
        detected = {}
        for i, f in enumerate(self.filenames):
            allowed = self.clip_probs[i] > pp.tag_threshold if pp.gate_by_clip else None
            detected[f] = detect_events(self.frame_probs[i], CLASSES, self.hop_s, self.durations_s[f], thresholds,
                                        median_frames, pp.low_threshold_ratio, pp.min_event_s, pp.min_gap_s, allowed)
        return detected

    def scores(self, detected: dict, tag_threshold: float) -> dict:
        event = metrics.event_based(self.reference, detected)
        segment = metrics.segment_based(self.reference, detected, self.durations_s)
        return {**metrics.headline(event, "event"), **metrics.headline(segment, "segment"),
                **metrics.tagging(self.targets, self.clip_probs, tag_threshold)}, event, segment


def median_windows_from_durations(reference: dict, fraction: float, default_s: float) -> np.ndarray:
    """(classes,) median windows in seconds: `fraction` of each class's mean event duration in `reference`
    ({filename: [(onset_s, offset_s, label)]}); `default_s` for a class without events there."""
    durations = {c: [] for c in CLASSES}
    for events in reference.values():
        for onset_s, offset_s, label in events:
            durations[label].append(offset_s - onset_s)
    return np.array([fraction * np.mean(durations[c]) if durations[c] else default_s for c in CLASSES])


def sweep(preds: SplitPredictions, pp, hop_s: float, class_median_s=None):
    """Event F1 per class on each (threshold, median_s) grid point; returns rows for sweep.csv and the
    per-class choice (thresholds (classes,), median_s (classes,)). With class_median_s (classes,)
    given, the median windows are fixed to it and only the thresholds are swept. A class absent from
    the split keeps pp.threshold and pp.median_s."""
    medians = ([np.full(len(CLASSES), m) for m in pp.sweep_median_s] if class_median_s is None
               else [np.asarray(class_median_s)])
    rows, grid = [], []
    for threshold in pp.sweep_thresholds:
        for median_s in medians:
            event = metrics.event_based(preds.reference,
                                        preds.events(pp, threshold, np.round(median_s / hop_s).astype(int)))
            f1 = metrics.class_wise_f1(event)
            grid.append((threshold, median_s, np.nan_to_num(f1, nan=-1.0)))
            rows.append({"threshold": threshold, "median_s": float(median_s[0]) if class_median_s is None
                         else "per_class", "event_f1_macro": metrics.headline(event, "event")["event_f1_macro"],
                         **{c: float(v) for c, v in zip(CLASSES, f1)}})
    scores = np.stack([f1 for *_, f1 in grid])           # (grid points, classes)
    best = scores.argmax(0)                              # first best point per class
    thresholds = np.array([grid[b][0] for b in best])
    median_s = np.array([grid[b][1][c] for c, b in enumerate(best)])
    # A class without events in the split has no F1 anywhere (nan): it keeps the configured settings,
    # not the grid's first (most permissive) point.
    absent = (scores < 0).all(0)
    thresholds[absent] = pp.threshold
    median_s[absent] = pp.median_s if class_median_s is None else np.asarray(class_median_s)[absent]
    return rows, thresholds, median_s


def write_predictions(path: Path, detected: dict) -> None:
    lines = ["filename\tonset\toffset\tevent_label"]
    for f, events in detected.items():
        lines += [f"{f}\t{onset:.3f}\t{offset:.3f}\t{label}" for onset, offset, label in events]
    path.write_text("\n".join(lines) + "\n")


def class_wise_rows(event, segment, thresholds, median_s) -> list[dict]:
    ev, seg = event.results_class_wise_metrics(), segment.results_class_wise_metrics()
    return [{"class": c, "event_f1": ev[c]["f_measure"]["f_measure"], "event_er": ev[c]["error_rate"]["error_rate"],
             "segment_f1": seg[c]["f_measure"]["f_measure"], "reference_events": int(ev[c]["count"]["Nref"]),
             "predicted_events": int(ev[c]["count"]["Nsys"]), "threshold": float(thresholds[i]),
             "median_s": float(median_s[i])} for i, c in enumerate(CLASSES)]


def markdown_table(rows: list[dict]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[k]) for k in header) + " |" for r in rows])


def write_csv(path: Path, rows: list[dict]) -> None:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in header)
                                  for r in rows]
    path.write_text("\n".join(lines) + "\n")


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="run folder (runs/sed/<name>) or checkpoint file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value changes to the run's config "
                                                     "(e.g. postprocess.sweep=false data.root=...)")
    args = parser.parse_args(argv)
    start = time.time()
    run_dir, ckpt_path = find_checkpoint(args.target, "sed")
    cfg = load_config(Config, run_dir / "config.yaml", args.overrides)
    set_cpu_threads(cfg.run.cpu_threads)
    device = pick_device(cfg.run.device)
    dtype = amp_dtype(device, cfg.run.amp)
    state = load_checkpoint(ckpt_path)
    model = build_model(cfg.model, cfg.features.n_mels, len(CLASSES)).to(device)
    model.load_state_dict(judged_weights(cfg, state, ckpt_path))
    mean, std = state["band_mean"], state["band_std"]
    print(f"evaluating {ckpt_path} (step {state['step']}, best valid mAP {state['best'][0]:.4f}"
          f"{', the mean teacher' if judges_teacher(cfg) else ''})")

    splits = prepare_data(cfg)
    _, valid_set, _, _ = weak_datasets(cfg, splits["train"])
    valid_scores = validate(model, valid_set, device, dtype, cfg.postprocess.tag_threshold)
    pp, hop_s = cfg.postprocess, hop_seconds(cfg.features)
    thresholds = np.full(len(CLASSES), pp.threshold)
    median_s = np.full(len(CLASSES), pp.median_s)
    sweep_rows = []
    test = SplitPredictions(splits["test"], cfg, model, mean, std, device, dtype) if "test" in splits else None
    class_median_s = None
    if pp.median_duration_fraction > 0:
        if test is None:
            raise ConfigError("postprocess.median_duration_fraction takes the event durations of the strongly "
                              "labelled test split; set data.test_csv or postprocess.median_duration_fraction=0")
        class_median_s = median_s = median_windows_from_durations(test.reference, pp.median_duration_fraction,
                                                                  pp.median_s)
        print("median windows from the test split's event durations: " +
              ", ".join(f"{c} {m:.2f} s" for c, m in zip(CLASSES, median_s)))
    if test is not None and pp.sweep:
        sweep_rows, thresholds, median_s = sweep(test, pp, hop_s, class_median_s)
        write_csv(run_dir / "sweep.csv", sweep_rows)
        print(f"post-processing chosen per class on the test split ({len(sweep_rows)} grid points)")
    median_frames = np.round(median_s / hop_s).astype(int)

    results, tables = {}, {}
    evaluated = {"eval": SplitPredictions(splits["eval"], cfg, model, mean, std, device, dtype)}
    if test is not None:
        evaluated["test"] = test
    for name, preds in evaluated.items():
        detected = preds.events(pp, thresholds, median_frames)
        write_predictions(run_dir / f"predictions_{name}.tsv", detected)
        results[name], event, segment = preds.scores(detected, pp.tag_threshold)
        tables[name] = class_wise_rows(event, segment, thresholds, median_s)
        write_csv(run_dir / f"class_wise_{name}.csv", tables[name])
        (run_dir / f"sed_eval_{name}.txt").write_text(f"{event}\n{segment}\n")
    # The same eval clips with the untuned defaults, to show what the sweep bought.
    default_detected = evaluated["eval"].events(pp, pp.threshold, round(pp.median_s / hop_s))
    default_event_f1 = metrics.headline(metrics.event_based(evaluated["eval"].reference, default_detected),
                                        "event")["event_f1_macro"]

    eval_preds = evaluated["eval"]
    figures = []
    order = sorted(range(len(eval_preds.filenames)), key=lambda i: -len(eval_preds.reference[eval_preds.filenames[i]]))
    detected = eval_preds.events(pp, thresholds, median_frames)
    for i in order[:pp.timeline_clips]:
        f = eval_preds.filenames[i]
        figure = run_dir / "figures" / f"timeline_{Path(f).stem}.png"
        event_timeline(figure, f, eval_preds.log_mel[i], eval_preds.frame_probs[i], hop_s, CLASSES,
                       eval_preds.reference[f], detected[f], thresholds)
        figures.append(figure)

    headline = {f"eval_{k}": v for k, v in results["eval"].items()}
    headline["eval_event_f1_macro_default_pp"] = default_event_f1
    if "test" in results:
        headline.update({f"test_{k}": results["test"][k] for k in ("event_f1_macro", "segment_f1_macro", "mAP")})
    headline.update({k: float(v) for k, v in valid_scores.items()})
    write_report(run_dir, cfg, ckpt_path, results, tables, headline, sweep_rows, figures)
    train_summary = read_summary(run_dir) or {}
    keep = ("best_epoch", "epochs_trained", "train_seconds", "train_clips_per_s", "device")
    write_summary(run_dir, model=f"{cfg.model.name}-{cfg.model.pooling}",
                  metrics={k: headline[k] for k in ("eval_event_f1_macro", "eval_event_f1_macro_sed_eval",
                                                    "eval_event_er_micro",
                                                    "eval_segment_f1_macro", "eval_tag_f1_macro", "eval_mAP")},
                  all_metrics=headline, params=count_parameters(model),
                  checkpoint=str(ckpt_path), eval_seconds=round(time.time() - start, 1),
                  **{k: train_summary[k] for k in keep if k in train_summary})
    h = headline
    print(f"eval: event F1 (macro) {h['eval_event_f1_macro']:.4f}, event ER {h['eval_event_er_micro']:.3f}, "
          f"segment F1 (macro) {h['eval_segment_f1_macro']:.4f}, tagging F1 {h['eval_tag_f1_macro']:.4f}, "
          f"mAP {h['eval_mAP']:.4f}; report {run_dir / 'report.md'}")


def write_report(run_dir, cfg, ckpt_path, results, tables, headline, sweep_rows, figures) -> None:
    lines = [f"# Sound event detection report: {cfg.model.name} ({cfg.model.pooling} pooling)", "",
             f"Checkpoint `{ckpt_path}`; data `{cfg.data.root}`. Event-based: t_collar {metrics.T_COLLAR_S} s, "
             f"percentage_of_length {metrics.PERCENTAGE_OF_LENGTH}; segment-based: {metrics.SEGMENT_S} s segments. "
             "Macro = class-wise average (DCASE2018's ranking metric), micro = overall. In `*_f1_macro` a class with "
             "references but no detections counts as 0; `*_f1_macro_sed_eval` is sed_eval's own average, which "
             "skips such a class (its F1 is nan in the class-wise tables).", "",
             "## Headline", "", markdown_table([{"split": name, **scores} for name, scores in results.items()]), "",
             f"Eval event F1 (macro) with the untuned defaults (threshold {cfg.postprocess.threshold}, "
             f"median {cfg.postprocess.median_s} s): {headline['eval_event_f1_macro_default_pp']:.3f}. "
             f"Weak valid split: mAP {headline['valid_mAP']:.3f}.", ""]
    for name, rows in tables.items():
        lines += [f"## Class-wise ({name})", "", markdown_table(rows), ""]
    if sweep_rows:
        best = max(sweep_rows, key=lambda r: r["event_f1_macro"])
        lines += ["## Post-processing sweep (test split)", "",
                  f"{len(sweep_rows)} grid points (sweep.csv); best single setting: threshold {best['threshold']}, "
                  f"median {best['median_s']}{' s' if isinstance(best['median_s'], float) else ''} -> "
                  f"event F1 (macro) {best['event_f1_macro']:.3f}. "
                  "The per-class choice is in the class-wise tables.", ""]
    if figures:
        lines += ["## Event timelines (eval)", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
    (run_dir / "report.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
