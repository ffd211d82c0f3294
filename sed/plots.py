"""The event-timeline figure: log-mel spectrogram, frame probabilities per class, and reference vs
predicted events on one time axis."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def event_timeline(path: Path, title: str, log_mel: np.ndarray, frame_probs: np.ndarray, hop_s: float,
                   classes: list[str], reference: list, predicted: list, thresholds: np.ndarray) -> None:
    """log_mel (time, n_mels); frame_probs (time, classes); events [(onset_s, offset_s, label)]."""
    shown = sorted({label for *_, label in reference + predicted}, key=classes.index) or classes[:1]
    duration_s = len(frame_probs) * hop_s
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [2, 2, 0.4 * len(shown) + 0.6]})
    axes[0].imshow(log_mel.T, origin="lower", aspect="auto", extent=(0, len(log_mel) * hop_s, 0, log_mel.shape[1]),
                   cmap="magma")
    axes[0].set_ylabel("mel band")
    axes[0].set_title(title)
    colours = {label: plt.cm.tab10(classes.index(label) % 10) for label in shown}
    times = np.arange(len(frame_probs)) * hop_s
    for label in shown:
        c = classes.index(label)
        axes[1].plot(times, frame_probs[:, c], color=colours[label], label=label)
        axes[1].axhline(thresholds[c], color=colours[label], linestyle=":", linewidth=0.8)
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("frame probability")
    axes[1].legend(loc="upper right", fontsize=7)
    for row, label in enumerate(shown):
        for onset, offset, event_label in reference:
            if event_label == label:
                axes[2].broken_barh([(onset, offset - onset)], (row - 0.4, 0.35), color="0.55")
        for onset, offset, event_label in predicted:
            if event_label == label:
                axes[2].broken_barh([(onset, offset - onset)], (row + 0.05, 0.35), color=colours[label])
    axes[2].set_yticks(range(len(shown)), shown, fontsize=8)
    axes[2].set_ylim(-0.6, len(shown) - 0.4)
    axes[2].set_xlim(0, duration_s)
    axes[2].set_xlabel("time (s)   grey: reference, colour: predicted")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
