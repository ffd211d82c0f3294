"""Post-processing against hand-computed cases: frames to events at the exact hop, hysteresis,
median filter, gap filling, minimum length."""
import numpy as np
import pytest

from sed.config import FeatureConfig
from sed.data import frames_per_clip, hop_seconds
from sed.postprocess import detect_events, drop_short, fill_gaps, frames_to_events, hysteresis, median_smooth, runs


def test_frames_to_events_exact_at_boundaries():
    active = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    hop_s = 0.02
    # frames 0-1 -> [0, 0.04); frame 4 -> [0.08, 0.10); frames 6-8 (last frame) -> [0.12, 0.18) cut at 0.17
    events = frames_to_events(active, hop_s, clip_s=0.17)
    assert np.array(events) == pytest.approx(np.array([(0.0, 0.04), (0.08, 0.10), (0.12, 0.17)]), abs=1e-12)
    assert frames_to_events(np.zeros(5, dtype=bool), hop_s, 1.0) == []
    assert frames_to_events(np.ones(3, dtype=bool), 0.5, 10.0) == [(0.0, 1.5)]


def test_exact_hop_is_samples_over_rate():
    # 20 ms at 44.1 kHz is 882 samples exactly; at 22.05 kHz it is 441; 10 s -> 501 centred frames
    assert hop_seconds(FeatureConfig(sample_rate=44100, hop_ms=20)) == 882 / 44100
    assert hop_seconds(FeatureConfig(sample_rate=16000, hop_ms=23)) == 368 / 16000
    assert frames_per_clip(FeatureConfig(sample_rate=44100, hop_ms=20, clip_s=10)) == 501


def test_runs_half_open():
    assert runs(np.array([0, 1, 1, 0, 1], dtype=bool)) == [(1, 3), (4, 5)]
    assert runs(np.array([], dtype=bool)) == []


def test_hysteresis_keeps_low_frames_only_next_to_a_high_one():
    probs = np.array([0.1, 0.35, 0.6, 0.4, 0.2, 0.35, 0.45, 0.1, 0.8])
    active = hysteresis(probs, high=0.5, low=0.3)
    # run 1-3 holds 0.6 > 0.5 -> kept whole; run 5-6 peaks at 0.45 -> dropped; frame 8 -> kept
    assert active.tolist() == [False, True, True, True, False, False, False, False, True]
    # low == high is a plain threshold
    assert hysteresis(probs, 0.4, 0.4).tolist() == (probs > 0.4).tolist()


def test_median_filter_removes_spikes_and_fills_holes():
    probs = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1], dtype=float)
    smooth = median_smooth(probs, 3)
    assert smooth.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert median_smooth(probs, 4).tolist() == median_smooth(probs, 5).tolist()  # even windows grow to odd
    assert median_smooth(probs, 1) is probs


def test_fill_gaps_and_drop_short():
    active = np.array([1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    assert fill_gaps(active, 2).astype(int).tolist() == [1, 1, 1, 1, 0, 0, 0, 1]  # gap of 1 < 2 filled
    assert fill_gaps(active, 4).astype(int).tolist() == [1] * 8
    assert drop_short(active, 2).astype(int).tolist() == [1, 1, 0, 0, 0, 0, 0, 0]


def test_detect_events_per_class_settings_and_gating():
    frame_probs = np.zeros((10, 2))
    frame_probs[2:5, 0] = 0.9
    frame_probs[6, 0] = 0.9         # a one-frame blip, removed by min_event_s
    frame_probs[1:9, 1] = 0.45      # above class 1's threshold 0.4 but not class 0's 0.5
    events = detect_events(frame_probs, ["a", "b"], hop_s=0.1, clip_s=1.0, thresholds=[0.5, 0.4],
                           median_frames=[1, 1], min_event_s=0.2)
    assert [(round(on, 9), round(off, 9), c) for on, off, c in events] == [(0.1, 0.9, "b"), (0.2, 0.5, "a")]
    gated = detect_events(frame_probs, ["a", "b"], 0.1, 1.0, 0.4, 1, min_event_s=0.2,
                          allowed=np.array([True, False]))
    assert [c for *_, c in gated] == ["a"]
