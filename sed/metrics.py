"""The course's metrics through the field's libraries: sed_eval event-based (t_collar 0.2 s, offsets
within 20 % of the event length: set explicitly, sed_eval's own default is 0.5) and segment-based
(1 s) F1 / error rate, macro (class-wise average) and micro (overall); tagging F1 and mAP through
scikit-learn. Both libraries are imported where they are used: together they take about as long
to import as torch, and training start-up needs neither."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from sed.config import CLASSES

if TYPE_CHECKING:
    import sed_eval

T_COLLAR_S = 0.2
PERCENTAGE_OF_LENGTH = 0.2
SEGMENT_S = 1.0


def _as_list(filename: str, events) -> list[dict]:
    return [{"filename": filename, "event_label": label, "onset": float(onset), "offset": float(offset)}
            for onset, offset, label in events]


def event_based(reference: dict, estimated: dict) -> sed_eval.sound_event.EventBasedMetrics:
    """reference / estimated: {filename: [(onset_s, offset_s, label)]}, evaluated file by file
    over the reference's files (a file missing from `estimated` has no detections)."""
    import sed_eval
    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=CLASSES, t_collar=T_COLLAR_S, percentage_of_length=PERCENTAGE_OF_LENGTH,
        evaluate_onset=True, evaluate_offset=True)
    for filename, events in reference.items():
        metric.evaluate(_as_list(filename, events), _as_list(filename, estimated.get(filename, [])))
    return metric


def segment_based(reference: dict, estimated: dict, durations_s: dict) -> sed_eval.sound_event.SegmentBasedMetrics:
    import sed_eval
    metric = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=CLASSES, time_resolution=SEGMENT_S)
    for filename, events in reference.items():
        metric.evaluate(_as_list(filename, events), _as_list(filename, estimated.get(filename, [])),
                        evaluated_length_seconds=durations_s[filename])
    return metric


def headline(metric, prefix: str) -> dict[str, float]:
    """Macro (class-wise average, DCASE2018's ranking metric for events) and micro (overall) F1 and ER.

    sed_eval gives a class with references but no detections the F1 nan (precision 0/0) and its
    class-wise average skips it, so a system that never predicts a hard class scores higher.
    `f1_macro` counts such a class as 0 (averaging over the classes that have references);
    `f1_macro_sed_eval` is sed_eval's own average, for comparison with numbers computed that way.
    `er_macro` averages the error rate over the same classes: a class absent from the reference has
    no error rate (sed_eval divides its insertions by eps, and its average printed 3.0e16)."""
    overall = metric.results_overall_metrics()
    average = metric.results_class_wise_average_metrics()
    class_wise = metric.results_class_wise_metrics()
    present = [r for r in class_wise.values() if r["count"]["Nref"] > 0]
    strict = [0.0 if np.isnan(r["f_measure"]["f_measure"]) else r["f_measure"]["f_measure"] for r in present]
    return {f"{prefix}_f1_macro": float(np.mean(strict)) if strict else float("nan"),
            f"{prefix}_f1_macro_sed_eval": float(average["f_measure"]["f_measure"]),
            f"{prefix}_f1_micro": float(overall["f_measure"]["f_measure"]),
            f"{prefix}_er_macro": float(np.mean([r["error_rate"]["error_rate"] for r in present]))
            if present else float("nan"),
            f"{prefix}_er_micro": float(overall["error_rate"]["error_rate"])}


def class_wise_f1(metric) -> np.ndarray:
    """(classes,) F1 per class (nan where a class has neither references nor detections)."""
    results = metric.results_class_wise_metrics()
    return np.array([results[c]["f_measure"]["f_measure"] for c in CLASSES], dtype=float)


def tagging(targets: np.ndarray, clip_probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Clip-level tagging: F1 (macro, micro) at `threshold` and mAP (macro over the classes present)."""
    from sklearn.metrics import average_precision_score, f1_score
    decisions = clip_probs > threshold
    present = targets.sum(0) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined precision for a class never predicted -> 0
        f1_macro = f1_score(targets[:, present], decisions[:, present], average="macro", zero_division=0)
        f1_micro = f1_score(targets, decisions, average="micro", zero_division=0)
    mean_ap = average_precision_score(targets[:, present], clip_probs[:, present], average="macro")
    return {"tag_f1_macro": float(f1_macro), "tag_f1_micro": float(f1_micro), "mAP": float(mean_ap)}
