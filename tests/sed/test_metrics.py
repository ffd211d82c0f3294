"""Our metric wrappers against sed_eval / scikit-learn called directly, and the collar settings."""
import numpy as np
import pytest
import sed_eval
from sklearn.metrics import average_precision_score

from sed import metrics
from sed.config import CLASSES


def _as_list(f, events):
    return [{"filename": f, "event_label": c, "onset": on, "offset": off} for on, off, c in events]


def test_offset_tolerance_is_20_percent_of_length_not_sed_eval_default():
    reference = {"a.wav": [(1.0, 3.0, "Dog")]}
    # onset within the 0.2 s collar; offset 0.7 s late: outside max(0.2, 0.2 * 2 s), inside 0.5 * 2 s
    estimated = {"a.wav": [(1.1, 3.7, "Dog")]}
    ours = metrics.event_based(reference, estimated).results_overall_metrics()["f_measure"]["f_measure"]
    assert ours == 0.0
    default = sed_eval.sound_event.EventBasedMetrics(CLASSES, t_collar=0.2)  # percentage_of_length 0.5
    default.evaluate(_as_list("a.wav", reference["a.wav"]), _as_list("a.wav", estimated["a.wav"]))
    assert default.results_overall_metrics()["f_measure"]["f_measure"] == 1.0
    assert (metrics.T_COLLAR_S, metrics.PERCENTAGE_OF_LENGTH, metrics.SEGMENT_S) == (0.2, 0.2, 1.0)


def _random_events(rng, n):
    events = []
    for _ in range(n):
        onset = round(rng.uniform(0, 8), 2)
        events.append((onset, round(onset + rng.uniform(0.2, 2), 2), str(rng.choice(CLASSES[:4]))))
    return events


def test_event_and_segment_metrics_equal_sed_eval_called_directly():
    rng = np.random.default_rng(0)
    files = [f"f{i}.wav" for i in range(6)]
    reference = {f: _random_events(rng, 3) for f in files}
    estimated = {f: [(on + rng.normal(0, 0.15), off + rng.normal(0, 0.3), c) for on, off, c in reference[f][:2]]
                 + _random_events(rng, 1) for f in files}
    estimated = {f: [(max(0.0, on), max(on + 0.05, off), c) for on, off, c in ev] for f, ev in estimated.items()}
    direct_event = sed_eval.sound_event.EventBasedMetrics(CLASSES, t_collar=0.2, percentage_of_length=0.2)
    direct_segment = sed_eval.sound_event.SegmentBasedMetrics(CLASSES, time_resolution=1.0)
    for f in files:
        direct_event.evaluate(_as_list(f, reference[f]), _as_list(f, estimated[f]))
        direct_segment.evaluate(_as_list(f, reference[f]), _as_list(f, estimated[f]), evaluated_length_seconds=10.0)
    ours_event = metrics.headline(metrics.event_based(reference, estimated), "event")
    ours_segment = metrics.headline(metrics.segment_based(reference, estimated, {f: 10.0 for f in files}), "segment")
    assert ours_event["event_f1_micro"] == direct_event.results_overall_metrics()["f_measure"]["f_measure"]
    assert ours_event["event_f1_macro_sed_eval"] == \
        direct_event.results_class_wise_average_metrics()["f_measure"]["f_measure"]
    assert ours_event["event_er_micro"] == direct_event.results_overall_metrics()["error_rate"]["error_rate"]
    assert ours_segment["segment_f1_macro_sed_eval"] == \
        direct_segment.results_class_wise_average_metrics()["f_measure"]["f_measure"]
    assert 0 < ours_event["event_f1_micro"] < 1 and 0 < ours_segment["segment_f1_micro"] < 1


def test_tagging_f1_and_map_hand_case():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.4, 0.8], [0.1, 0.6]])
    scores = metrics.tagging(targets, probs, threshold=0.5)
    # class 0: TP 1 (clip 0), FP 1 (clip 1), FN 1 (clip 2) -> F1 0.5; class 1: TP 2, FP 1 -> F1 0.8
    assert scores["tag_f1_macro"] == pytest.approx((0.5 + 0.8) / 2)
    assert scores["tag_f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert scores["mAP"] == pytest.approx(average_precision_score(targets, probs, average="macro"))


def test_macro_f1_counts_a_never_detected_class_as_zero():
    reference = {"a.wav": [(1.0, 2.0, "Dog"), (4.0, 6.0, "Cat")]}
    estimated = {"a.wav": [(1.0, 2.0, "Dog")]}              # Dog perfect, Cat never detected
    scores = metrics.headline(metrics.event_based(reference, estimated), "event")
    assert scores["event_f1_macro"] == 0.5                   # (1 + 0) / 2
    assert scores["event_f1_macro_sed_eval"] == 1.0          # sed_eval: Cat's F1 is nan and skipped


def test_macro_error_rate_averages_the_classes_present_in_the_reference():
    """A detection of a class absent from the reference: sed_eval's class-wise average error rate
    divides its insertions by eps (3.0e16 in a report); ours averages over the classes present."""
    reference = {"a.wav": [(1.0, 3.0, "Dog"), (5.0, 6.0, "Cat")]}
    estimated = {"a.wav": [(1.0, 3.0, "Dog"), (7.0, 8.0, "Frying")]}  # Dog right, Cat missed, Frying extra
    metric = metrics.event_based(reference, estimated)
    assert metric.results_class_wise_average_metrics()["error_rate"]["error_rate"] > 1e6  # sed_eval's own
    assert metrics.headline(metric, "eval")["eval_er_macro"] == pytest.approx((0.0 + 1.0) / 2)  # Dog 0, Cat 1


def test_sweep_keeps_the_configured_settings_for_a_class_absent_from_the_split():
    """Only Dog has events in the split: it gets its best grid point; the other classes have no F1 at any
    point (nan) and keep postprocess.threshold / median_s instead of the grid's first, most permissive point."""
    from sed.config import PostprocessConfig
    from sed.evaluate import sweep

    class DogOnly:
        reference = {"a.wav": [(1.0, 3.0, "Dog")]}

        def events(self, pp, threshold, median_frames):
            return {"a.wav": [(1.0, 3.0, "Dog") if threshold == 0.4 else (5.0, 6.0, "Dog")]}

    pp = PostprocessConfig(threshold=0.6, median_s=0.3, sweep_thresholds=[0.2, 0.4], sweep_median_s=[0.0, 1.0])
    _, thresholds, median_s = sweep(DogOnly(), pp, hop_s=0.02)
    dog = CLASSES.index("Dog")
    assert thresholds[dog] == 0.4 and median_s[dog] == 0.0
    others = [i for i in range(len(CLASSES)) if i != dog]
    assert (thresholds[others] == 0.6).all() and (median_s[others] == 0.3).all()
