"""Frame probabilities -> events: per-class median filter, hysteresis (double) thresholding, gap
filling, minimum length, and frames to seconds at the exact frame hop.

Frame k stands for [k * hop_s, (k + 1) * hop_s); a run of active frames a..b becomes the event
(a * hop_s, (b + 1) * hop_s), cut at the clip's end."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter


def median_smooth(probs: np.ndarray, window_frames: int) -> np.ndarray:
    """Median over `window_frames` (made odd; <= 1 = unchanged) along time of a (time,) array."""
    if window_frames <= 1:
        return probs
    window_frames += 1 - window_frames % 2
    return median_filter(probs, size=window_frames, mode="nearest")


def hysteresis(probs: np.ndarray, high: float, low: float) -> np.ndarray:
    """(time,) -> bool: frames above `low` that belong to a run containing a frame above `high`."""
    above_low = probs > low
    active = np.zeros_like(above_low)
    for start, end in runs(above_low):
        if np.any(probs[start:end] > high):
            active[start:end] = True
    return active


def runs(active: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a (time,) bool array as half-open [start, end) frame ranges."""
    padded = np.concatenate([[False], active.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def fill_gaps(active: np.ndarray, max_gap_frames: int) -> np.ndarray:
    """Switch on inactive stretches shorter than `max_gap_frames` between two active runs."""
    active = active.copy()
    found = runs(active)
    for (_, end), (next_start, _) in zip(found[:-1], found[1:]):
        if next_start - end < max_gap_frames:
            active[end:next_start] = True
    return active


def drop_short(active: np.ndarray, min_frames: int) -> np.ndarray:
    active = active.copy()
    for start, end in runs(active):
        if end - start < min_frames:
            active[start:end] = False
    return active


def frames_to_events(active: np.ndarray, hop_s: float, clip_s: float) -> list[tuple[float, float]]:
    """(time,) bool -> [(onset_s, offset_s)]: frames a..b -> (a * hop_s, min((b + 1) * hop_s, clip_s))."""
    return [(start * hop_s, min(end * hop_s, clip_s)) for start, end in runs(active)]


def detect_events(frame_probs: np.ndarray, classes: list[str], hop_s: float, clip_s: float,
                  thresholds, median_frames, low_ratio: float = 1.0, min_event_s: float = 0.0,
                  min_gap_s: float = 0.0, allowed=None) -> list[tuple[float, float, str]]:
    """One clip's (time, classes) frame probabilities -> sorted [(onset_s, offset_s, label)].

    thresholds / median_frames: one per class (or a scalar for all); an event starts above the
    threshold and lasts while the smoothed probability stays above low_ratio * threshold.
    allowed: optional (classes,) bool, e.g. the clip's tags; other classes give no events."""
    n_classes = frame_probs.shape[1]
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), (n_classes,))
    median_frames = np.broadcast_to(np.asarray(median_frames, dtype=int), (n_classes,))
    events = []
    for c in range(n_classes):
        if allowed is not None and not allowed[c]:
            continue
        smooth = median_smooth(frame_probs[:, c], int(median_frames[c]))
        active = hysteresis(smooth, thresholds[c], low_ratio * thresholds[c])
        active = fill_gaps(active, int(round(min_gap_s / hop_s)))
        active = drop_short(active, int(round(min_event_s / hop_s)))
        events += [(onset, offset, classes[c]) for onset, offset in frames_to_events(active, hop_s, clip_s)]
    return sorted(events)
