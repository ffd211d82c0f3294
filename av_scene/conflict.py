"""The modality-conflict analysis: where audio and video disagree, which one was right, which classes
gain from fusion and why. Input: test labels and the audio-only, video-only and fused probabilities;
output: a markdown report."""
from __future__ import annotations

import numpy as np


def agreement_breakdown(labels, audio_pred, video_pred, fused_pred) -> list[dict]:
    """Clips grouped by what the two modalities did, with how often the fused model was right."""
    audio_right, video_right = audio_pred == labels, video_pred == labels
    disagree = audio_pred != video_pred
    groups = [("agree, both right", ~disagree & audio_right),
              ("agree, both wrong", ~disagree & ~audio_right),
              ("disagree, audio right", disagree & audio_right),
              ("disagree, video right", disagree & video_right),
              ("disagree, both wrong", disagree & ~audio_right & ~video_right)]
    fused_right = fused_pred == labels
    return [{"case": name, "clips": int(mask.sum()),
             "fused_right": int((mask & fused_right).sum())} for name, mask in groups]


def top_confusions(labels, predictions, fused_pred, class_names, k: int = 3) -> list[tuple]:
    """The k most frequent (true, predicted) mistakes: (true, predicted, count, fused accuracy on them)."""
    pairs = {}
    for t, p in zip(labels[labels != predictions], predictions[labels != predictions]):
        pairs[(t, p)] = pairs.get((t, p), 0) + 1
    found = sorted(pairs.items(), key=lambda item: -item[1])[:k]
    result = []
    for (t, p), count in found:
        mask = (labels == t) & (predictions == p)
        result.append((class_names[t], class_names[p], count, float((fused_pred[mask] == t).mean())))
    return result


def conflict_report(labels: np.ndarray, audio_probs: np.ndarray, video_probs: np.ndarray,
                    fused_probs: np.ndarray, class_names: list[str], source: str,
                    gate: np.ndarray | None = None, min_gain: float = 0.05) -> str:
    """Markdown. labels (N,); *_probs (N, classes); gate (N,) the gated model's mean trust in audio."""
    audio_pred, video_pred, fused_pred = audio_probs.argmax(1), video_probs.argmax(1), fused_probs.argmax(1)
    acc = lambda pred, mask: float((pred[mask] == labels[mask]).mean()) if mask.any() else float("nan")
    everything = np.ones_like(labels, dtype=bool)
    lines = ["# Modality-conflict analysis (test)", "",
             f"Unimodal predictions from {source}. Accuracy: audio-only {acc(audio_pred, everything):.3f}, "
             f"video-only {acc(video_pred, everything):.3f}, fused {acc(fused_pred, everything):.3f}.", "",
             "## Per class", "",
             "| class | clips | audio-only | video-only | fused | fused - best unimodal |"
             + (" mean gate (1 = audio) |" if gate is not None else ""),
             "|---|---|---|---|---|---|" + ("---|" if gate is not None else "")]
    per_class = []
    for c, name in enumerate(class_names):
        mask = labels == c
        row = {"class": name, "clips": int(mask.sum()), "audio": acc(audio_pred, mask),
               "video": acc(video_pred, mask), "fused": acc(fused_pred, mask)}
        row["gain"] = row["fused"] - max(row["audio"], row["video"])
        per_class.append(row)
        gate_cell = f" {gate[mask].mean():.2f} |" if gate is not None and mask.any() else ""
        lines.append(f"| {name} | {row['clips']} | {row['audio']:.3f} | {row['video']:.3f} | "
                     f"{row['fused']:.3f} | {row['gain']:+.3f} |{gate_cell}")

    breakdown = agreement_breakdown(labels, audio_pred, video_pred, fused_pred)
    lines += ["", "## When the modalities agree and disagree", "",
              "| case | clips | fused right |", "|---|---|---|"]
    lines += [f"| {b['case']} | {b['clips']} | {b['fused_right']} |" for b in breakdown]
    one_right = (audio_pred != video_pred) & ((audio_pred == labels) ^ (video_pred == labels))
    audio_conf, video_conf = audio_probs.max(1), video_probs.max(1)
    right_more_confident = np.where(audio_pred == labels, audio_conf > video_conf, video_conf > audio_conf)
    disagreements = int((audio_pred != video_pred).sum())
    lines += ["", f"Audio and video disagree on {disagreements} of {len(labels)} clips "
                  f"({disagreements / max(len(labels), 1):.0%}). In the {int(one_right.sum())} of them where exactly "
                  f"one modality is right, the right one was also the more confident one in "
                  f"{right_more_confident[one_right].mean() if one_right.any() else float('nan'):.0%} of clips, "
                  f"and the fused model sided with the right one in "
                  f"{(fused_pred[one_right] == labels[one_right]).mean() if one_right.any() else float('nan'):.0%}."]

    lines += ["", "## Most frequent unimodal mistakes", "",
              "| modality | true | predicted as | clips | fused accuracy on them |", "|---|---|---|---|---|"]
    confusions = {}
    for modality, pred in (("audio", audio_pred), ("video", video_pred)):
        confusions[modality] = top_confusions(labels, pred, fused_pred, class_names)
        lines += [f"| {modality} | {t} | {p} | {n} | {f:.2f} |" for t, p, n, f in confusions[modality]]

    lines += ["", "## Where does fusion help, and why?", ""]
    for row in sorted(per_class, key=lambda r: -r["gain"]):
        weaker, stronger = ("audio", "video") if row["audio"] < row["video"] else ("video", "audio")
        if row["gain"] >= min_gain:
            lines.append(f"- **{row['class']}** needs both modalities: fused {row['fused']:.2f} beats audio-only "
                         f"{row['audio']:.2f} and video-only {row['video']:.2f}; each modality rules out "
                         f"different wrong classes, and only their combination pins the scene down.")
        elif row[stronger] - row[weaker] >= 0.2 and row["fused"] >= row[stronger] - min_gain:
            mistakes = [f"{p} ({n})" for t, p, n, _ in confusions[weaker] if t == row["class"]]
            why = f"; {weaker} alone mistakes it for {', '.join(mistakes)}" if mistakes else ""
            lines.append(f"- **{row['class']}** is carried by {stronger}: fused {row['fused']:.2f} vs "
                         f"{stronger}-only {row[stronger]:.2f} and {weaker}-only {row[weaker]:.2f}{why}. "
                         f"Fusion keeps the {stronger} evidence instead of averaging it away.")
        elif row["gain"] <= -min_gain:
            lines.append(f"- **{row['class']}**: fusion hurts ({row['fused']:.2f} vs best unimodal "
                         f"{max(row['audio'], row['video']):.2f}); the weaker modality pulls confident "
                         f"right answers to wrong ones.")
    if gate is not None:
        mean_gate = {r["class"]: float(gate[labels == class_names.index(r["class"])].mean()) for r in per_class}
        order = sorted(mean_gate, key=mean_gate.get)
        lines.append(f"- The gate leans towards audio most for {order[-1]} ({mean_gate[order[-1]]:.2f}) and "
                     f"{order[-2]} ({mean_gate[order[-2]]:.2f}), towards video most for {order[0]} "
                     f"({mean_gate[order[0]]:.2f}) and {order[1]} ({mean_gate[order[1]]:.2f}).")
    return "\n".join(lines) + "\n"
