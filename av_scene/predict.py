"""Running a model over a split, and the two headline metrics (shared by train.py and evaluate.py)."""
from __future__ import annotations

import numpy as np
import torch

from common.device import autocast


@torch.no_grad()
def predict(model, loader, device, dtype=None) -> dict[str, np.ndarray]:
    """{"labels": (N,), "logits": (N, C)} and, where the model has them, "audio_logits",
    "video_logits" (N, C) and "gate" (N,), in the loader's order."""
    model.eval()
    collected: dict[str, list] = {"labels": []}
    for batch in loader:
        with autocast(device, dtype):
            outputs = model(batch["audio"].to(device), batch["video"].to(device))
        collected["labels"].append(batch["label"].numpy())
        for key, value in outputs.items():
            collected.setdefault(key, []).append(value.float().cpu().numpy())
    return {key: np.concatenate(parts) for key, parts in collected.items()}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def headline_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy and scikit-learn's multi-class log loss over all classes, averaged over clips, and their
    macro averages over the classes present (each class's mean over its clips, then the mean of those),
    which is how DCASE2021 Task 1B ranks systems."""
    from sklearn.metrics import log_loss  # heavy (~1.6 s): imported at the first validation, not at start-up
    probs = probs.astype(np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 rounding trips sklearn's sum-to-one check
    columns = list(range(probs.shape[1]))
    correct = probs.argmax(1) == labels
    present = np.unique(labels)
    class_weight = 1.0 / np.bincount(labels, minlength=probs.shape[1])[labels]  # each class present weighs 1
    return {"accuracy": float(correct.mean()),
            "log_loss": float(log_loss(labels, probs, labels=columns)),
            "accuracy_macro": float(np.mean([correct[labels == c].mean() for c in present])),
            "log_loss_macro": float(log_loss(labels, probs, labels=columns, sample_weight=class_weight))}
