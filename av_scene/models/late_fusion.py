"""Late (decision) fusion: two unimodal classifiers trained side by side, their class
probabilities combined by averaging, a weight, or a learned stacking classifier.

The weight and the stacker are fitted after training on the validation predictions (held-out data:
fitting them on training predictions would trust whichever branch overfits most)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from av_scene.models.unimodal import UnimodalClassifier

LATE_RULES = ("average", "weighted", "stacking")


class LateFusion(nn.Module):
    """{"audio_logits", "video_logits"} of the two branches and "logits" = log of their average
    probability, (batch, classes) each. Each branch learns from its own loss only."""

    fused_loss = False  # the training loss is the sum of the branch losses

    def __init__(self, audio_dim: int, video_dim: int, num_classes: int, hidden: int = 512,
                 embed: int = 128, dropout: float = 0.2, pooling: str = "mean"):
        super().__init__()
        self.audio = UnimodalClassifier("audio", audio_dim, num_classes, hidden, embed, dropout, pooling)
        self.video = UnimodalClassifier("video", video_dim, num_classes, hidden, embed, dropout, pooling)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> dict:
        audio_logits = self.audio(audio, video)["logits"]
        video_logits = self.video(audio, video)["logits"]
        probs = average_probs(audio_logits.softmax(-1), video_logits.softmax(-1))
        return {"logits": probs.clamp_min(1e-12).log(), "audio_logits": audio_logits,
                "video_logits": video_logits}


def average_probs(audio_probs, video_probs):
    """(batch, classes) each -> their mean; works on numpy arrays and tensors."""
    return 0.5 * (audio_probs + video_probs)


def weighted_probs(audio_probs, video_probs, audio_weight: float):
    return audio_weight * audio_probs + (1.0 - audio_weight) * video_probs


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, None)).mean())


def fit_audio_weight(audio_probs: np.ndarray, video_probs: np.ndarray, labels: np.ndarray,
                     steps: int = 101) -> float:
    """The audio weight in [0, 1] (grid of `steps`) with the lowest log loss on held-out data."""
    grid = np.linspace(0.0, 1.0, steps)
    losses = [_log_loss(weighted_probs(audio_probs, video_probs, w), labels) for w in grid]
    return float(grid[int(np.argmin(losses))])


class StackingFusion:
    """Multinomial logistic regression on [log p_audio, log p_video] (batch, 2 * classes)."""

    def __init__(self, num_classes: int, regularisation: float = 1.0):
        from sklearn.linear_model import LogisticRegression  # heavy: only for stacking, after training
        self.num_classes = num_classes
        self.model = LogisticRegression(C=regularisation, max_iter=2000)

    @staticmethod
    def features(audio_probs: np.ndarray, video_probs: np.ndarray) -> np.ndarray:
        return np.log(np.clip(np.concatenate([audio_probs, video_probs], axis=1), 1e-12, None))

    def fit(self, audio_probs, video_probs, labels) -> StackingFusion:
        self.model.fit(self.features(audio_probs, video_probs), labels)
        return self

    def predict_probs(self, audio_probs, video_probs) -> np.ndarray:
        """(batch, classes). A class the held-out set never showed keeps the average rule's
        probability (a zero would cost log(1e-15) = 34.5 nats on each of its clips); the stacker
        shares out the rest among the classes it was fitted on."""
        partial = self.model.predict_proba(self.features(audio_probs, video_probs))
        probs = average_probs(audio_probs, video_probs).astype(float)
        known = self.model.classes_
        probs[:, known] = partial * probs[:, known].sum(1, keepdims=True)
        return probs
