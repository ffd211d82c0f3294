"""A small synthetic DESED-like set in the DCASE2018 Task 4 layout, so the demo and the tests run the
whole pipeline offline: class-distinct synthetic event sounds at random onsets on a noise background,
exact strong labels, weak labels derived from them.

    root/audio/train/weak/*.wav    root/metadata/train/weak.csv   filename<TAB>label,label
    root/audio/test/*.wav          root/metadata/test/test.csv    filename<TAB>onset<TAB>offset<TAB>event_label
    root/audio/eval/*.wav          root/metadata/eval/eval.csv
    root/audio/train/unlabel_in_domain/*.wav                      (no labels; only with unlabelled_clips > 0)

    python -m sed.synth OUT_DIR [--train 300 --test 60 --eval 100 --unlabelled 0 --sample-rate 16000 --seed 1234]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

import numpy as np
import soundfile as sf

from sed.config import CLASSES

CLIP_S = 10.0
# (shortest, longest) event duration in seconds, per class.
DURATION_S = {"Alarm_bell_ringing": (1.0, 4.0), "Blender": (2.0, 6.0), "Cat": (0.6, 2.0),
              "Dishes": (0.3, 1.5), "Dog": (0.4, 1.5), "Electric_shaver_toothbrush": (1.0, 5.0),
              "Frying": (2.0, 8.0), "Running_water": (2.0, 8.0), "Speech": (0.6, 3.0),
              "Vacuum_cleaner": (3.0, 9.0)}


def _band_noise(rng, n, sr, low_hz, high_hz):
    """White noise restricted to [low_hz, high_hz] (FFT mask), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def _harmonics(f0_hz, t, sr, n_harmonics, decay=1.0):
    """Sum of harmonics of a (possibly time-varying) fundamental, below Nyquist."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0_hz, t.shape)) / sr
    out = np.zeros_like(t)
    for k in range(1, n_harmonics + 1):
        if np.max(f0_hz) * k < sr / 2:
            out += np.sin(k * phase) / k ** decay
    return out


def _bursts(rng, n, sr, period_s, burst_s, make_burst):
    """Repeated short sounds: `make_burst(length)` every ~period_s."""
    out = np.zeros(n)
    start = 0
    while start < n:
        length = min(int(burst_s * sr * rng.uniform(0.7, 1.3)), n - start)
        out[start:start + length] += make_burst(length)
        start += length + int(period_s * sr * rng.uniform(0.5, 1.5))
    return out


def event_sound(label: str, duration_s: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic sound of class `label`, about unit RMS. Each class has its own spectral signature."""
    n = int(duration_s * sr)
    t = np.arange(n) / sr
    if label == "Speech":  # voiced harmonics with a 4 Hz syllable rhythm
        f0 = rng.uniform(110, 220) * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))
        sound = _harmonics(f0, t, sr, 20) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t)) ** 2
    elif label == "Dog":  # barks: short harmonic bursts with falling pitch
        def bark(m):
            tb = np.arange(m) / sr
            return _harmonics(rng.uniform(350, 550) * (1 - 0.3 * tb / tb[-1]), tb, sr, 8) * np.exp(-tb / 0.06)
        sound = _bursts(rng, n, sr, 0.25, 0.15, bark)
    elif label == "Cat":  # meow: a rising-then-falling glide
        f0 = rng.uniform(450, 600) * (1 + 0.6 * np.sin(np.pi * t / t[-1]))
        sound = _harmonics(f0, t, sr, 6, decay=1.5)
    elif label == "Alarm_bell_ringing":  # a high bell tone struck at ~15 Hz
        f = rng.uniform(2500, 3200)
        sound = (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 1.5 * f * t)) \
            * (0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 15 * t)))
    elif label == "Dishes":  # clinks: sparse ringing impulses at 3-6 kHz
        def clink(m):
            tb = np.arange(m) / sr
            return np.sin(2 * np.pi * rng.uniform(3000, min(6000, 0.45 * sr)) * tb) * np.exp(-tb / 0.03)
        sound = _bursts(rng, n, sr, 0.12, 0.08, clink)
    elif label == "Frying":  # hiss above 2 kHz with random crackle
        crackle = (rng.random(n) < 0.002).astype(float) * rng.uniform(2, 6, n)
        sound = _band_noise(rng, n, sr, 2000, sr / 2) * (0.5 + np.convolve(crackle, np.ones(40), "same"))
    elif label == "Blender":  # low rumble plus a 90 Hz motor buzz
        sound = _band_noise(rng, n, sr, 100, 1200) + 0.7 * _harmonics(rng.uniform(80, 100), t, sr, 12)
    elif label == "Running_water":  # 800-2500 Hz noise, bubbling amplitude
        wobble = np.interp(t, np.linspace(0, t[-1], max(2, int(duration_s * 20))),
                           rng.uniform(0.3, 1.0, max(2, int(duration_s * 20))))
        sound = _band_noise(rng, n, sr, 800, 2500) * wobble
    elif label == "Vacuum_cleaner":  # steady broadband noise with a whine
        sound = _band_noise(rng, n, sr, 300, sr / 2) + 0.5 * np.sin(2 * np.pi * rng.uniform(1800, 2200) * t)
    elif label == "Electric_shaver_toothbrush":  # square-ish 100-140 Hz buzz, rich in harmonics
        sound = np.tanh(5 * np.sin(2 * np.pi * rng.uniform(100, 140) * t))
    else:
        raise ValueError(f"unknown class {label}")
    fade = min(n // 2, int(0.01 * sr))
    envelope = np.ones(n)
    envelope[:fade] = np.linspace(0, 1, fade)
    envelope[n - fade:] = np.linspace(1, 0, fade)
    sound = sound * envelope
    return sound / (np.sqrt(np.mean(sound ** 2)) + 1e-12)


def make_clip(rng: np.random.Generator, sr: int, max_events: int = 3):
    """A 10-s clip with 1..max_events events of distinct classes; returns (audio, [(onset_s, offset_s, label)])."""
    n = int(CLIP_S * sr)
    # Pink-ish background noise: white noise shaped by 1/sqrt(f).
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0))
    background = np.fft.irfft(spectrum, n)
    audio = 0.01 * background / np.sqrt(np.mean(background ** 2))
    events = []
    for label in rng.choice(CLASSES, size=rng.integers(1, max_events + 1), replace=False):
        shortest, longest = DURATION_S[label]
        duration_s = round(rng.uniform(shortest, longest), 3)
        onset_s = round(rng.uniform(0, CLIP_S - duration_s), 3)
        start = int(round(onset_s * sr))
        sound = event_sound(label, duration_s, sr, rng)
        snr_db = rng.uniform(6, 20)
        audio[start:start + len(sound)] += 0.01 * 10 ** (snr_db / 20) * sound
        events.append((onset_s, round(onset_s + duration_s, 3), str(label)))
    audio /= max(1.0, np.max(np.abs(audio)) / 0.95)
    return audio.astype(np.float32), sorted(events)


def _write_clip(job) -> list[tuple[float, float, str]]:
    """Worker: one clip from its own seed, so the set does not depend on the number of workers."""
    path, sample_rate, seed = job
    audio, events = make_clip(np.random.default_rng(seed), sample_rate)
    sf.write(path, audio, sample_rate, subtype="PCM_16")
    return events


UNLABELLED_AUDIO = "audio/train/unlabel_in_domain"


def generate(root: str | Path, train_clips: int = 300, test_clips: int = 60, eval_clips: int = 100,
             sample_rate: int = 16000, seed: int = 1234, workers: int = 1, unlabelled_clips: int = 0) -> Path:
    """Write the set under `root` unless a finished one with the same settings is there already.
    Unlabelled clips are drawn like the weak ones (in-domain) and written without labels."""
    root = Path(root)
    settings = {"train": train_clips, "test": test_clips, "eval": eval_clips,
                "sample_rate": sample_rate, "seed": seed}
    if unlabelled_clips:  # only then: sets generated before unlabelled clips existed stay valid
        settings["unlabelled"] = unlabelled_clips
    done = root / "SYNTH_DONE.json"
    if done.is_file() and json.loads(done.read_text()) == settings:
        return root
    print(f"generating the synthetic DCASE2018-layout set in {root}", flush=True)
    splits = (("train", train_clips), ("test", test_clips), ("eval", eval_clips), ("unlabelled", unlabelled_clips))
    for split_id, (split, count) in enumerate(splits):
        if not count:
            continue
        audio_dir = root / {"train": "audio/train/weak", "unlabelled": UNLABELLED_AUDIO}.get(split, f"audio/{split}")
        csv_path = root / ("metadata/train/weak.csv" if split == "train" else f"metadata/{split}/{split}.csv")
        audio_dir.mkdir(parents=True, exist_ok=True)
        # YouTube-id-like names as in DCASE2018: Y<id>_<start>_<end>.wav
        names = [f"Ysynth{split}{i:05d}_0.000_10.000.wav" for i in range(count)]
        jobs = [(audio_dir / name, sample_rate, [seed, split_id, i]) for i, name in enumerate(names)]
        if workers > 1:
            # close + join, not the context manager's terminate: under train.py the workers inherit
            # the preemption flag's blocked SIGTERM, so terminate could never end them (it hung)
            pool = multiprocessing.get_context("fork").Pool(workers)
            try:
                clip_events = pool.map(_write_clip, jobs, chunksize=8)
            finally:
                pool.close()
                pool.join()
        else:
            clip_events = [_write_clip(job) for job in jobs]
        if split == "unlabelled":
            continue
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["filename\tevent_labels" if split == "train" else "filename\tonset\toffset\tevent_label"]
        for name, events in zip(names, clip_events):
            if split == "train":
                lines.append(f"{name}\t{','.join(sorted({label for _, _, label in events}))}")
            else:
                lines += [f"{name}\t{onset:.3f}\t{offset:.3f}\t{label}" for onset, offset, label in events]
        csv_path.write_text("\n".join(lines) + "\n")
    done.write_text(json.dumps(settings) + "\n")
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--unlabelled", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    root = generate(args.out_dir, args.train, args.test, args.eval, args.sample_rate, args.seed, args.workers,
                    args.unlabelled)
    print(f"synthetic DCASE2018-layout set in {root}")


if __name__ == "__main__":
    main()
