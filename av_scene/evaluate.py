"""Evaluate a trained run: metrics, calibration, confusion matrix and the modality-conflict analysis.

    python -m av_scene.evaluate runs/av_scene/<name>            # best.pt, else the latest checkpoint
    python -m av_scene.evaluate runs/av_scene/<name>/checkpoints/step-00000100.pt
    python -m av_scene.evaluate runs/av_scene/baseline --audio-run runs/av_scene/audio \\
        --video-run runs/av_scene/video    # unimodal predictions for a model without its own heads

Writes into <run>/evaluation/: metrics.json, report.md (headline, calibration, class-wise,
late-fusion rules), conflict_analysis.md, confusion_test.png, predictions_test.csv (the course's
prediction format); and <run>/summary.json with the headline numbers.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from av_scene.conflict import conflict_report
from av_scene.data import SCENE_CLASSES, feature_dims, load_splits
from av_scene.models import MODEL_LABELS, build_model
from av_scene.models.late_fusion import LATE_RULES, StackingFusion, average_probs, fit_audio_weight, weighted_probs
from av_scene.predict import headline_metrics, predict, softmax
from av_scene.train import Config
from common.checkpoint import find_checkpoint, load_checkpoint
from common.config import ConfigError, cli_main, load_config
from common.device import pick_device
from common.params import count_parameters
from common.run import read_summary, write_summary


def load_run(path: str | Path, overrides: list[str] = ()):
    """A run folder or a checkpoint file -> (config with `overrides`, checkpoint, run folder)."""
    run_dir, checkpoint = find_checkpoint(path, "av_scene")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}/config.yaml not found; give a run folder written by av_scene.train")
    cfg = load_config(Config, run_dir / "config.yaml", overrides)
    return cfg, checkpoint, run_dir


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the log loss of softmax(logits / T) (on validation)."""
    def nll(log_t):
        probs = softmax(logits / np.exp(log_t))
        return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, None)).mean()
    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def cross_fitted(fit_predict, audio: np.ndarray, video: np.ndarray, labels: np.ndarray, folds: int = 5,
                 seed: int = 0) -> np.ndarray:
    """Validation probabilities of a fitted rule, each fold predicted by the rule fitted on the other
    folds: its validation numbers are then held-out numbers, like the test ones."""
    order = np.random.default_rng(seed).permutation(len(labels))
    probs = np.zeros_like(audio, dtype=float)
    for held in np.array_split(order, folds):
        rest = np.setdiff1d(order, held)
        probs[held] = fit_predict(audio[rest], video[rest], labels[rest], audio[held], video[held])
    return probs


def late_fusion_rules(valid: dict, test: dict) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """rule -> (valid probs, test probs, note). The weight and the stacker are fitted on validation
    for the test split, and 5-fold cross-fitted on validation for its own numbers."""
    probs = {split: (softmax(out["audio_logits"]), softmax(out["video_logits"]))
             for split, out in (("valid", valid), ("test", test))}
    labels = valid["labels"]
    weighted = lambda a, v, y, a_new, v_new: weighted_probs(a_new, v_new, fit_audio_weight(a, v, y))
    stacked = lambda a, v, y, a_new, v_new: StackingFusion(len(SCENE_CLASSES)).fit(a, v, y).predict_probs(a_new, v_new)
    weight = fit_audio_weight(*probs["valid"], labels)
    fitted_on_valid = lambda rule: rule(*probs["valid"], labels, *probs["test"])
    return {"average": (average_probs(*probs["valid"]), average_probs(*probs["test"]), "p = (p_a + p_v) / 2"),
            "weighted": (cross_fitted(weighted, *probs["valid"], labels), fitted_on_valid(weighted),
                         f"p = {weight:.2f} p_a + {1 - weight:.2f} p_v (weight fitted on validation; validation "
                         f"numbers 5-fold cross-fitted)"),
            "stacking": (cross_fitted(stacked, *probs["valid"], labels), fitted_on_valid(stacked),
                         "logistic regression on [log p_a, log p_v], fitted on validation (validation numbers "
                         "5-fold cross-fitted)")}


def classwise_table(labels: np.ndarray, probs: np.ndarray) -> list[dict]:
    """Per class: precision, recall, F1, accuracy (= recall, the DCASE class-wise accuracy), log loss."""
    predictions = probs.argmax(1)
    classes = list(range(len(SCENE_CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                                     zero_division=0)
    true_probs = np.clip(probs[np.arange(len(labels)), labels], 1e-15, None)
    rows = []
    for c, name in enumerate(SCENE_CLASSES):
        in_class = labels == c
        rows.append({"class": name, "clips": int(support[c]), "precision": float(precision[c]),
                     "recall": float(recall[c]), "f1": float(f1[c]),
                     "accuracy": float((predictions[in_class] == c).mean()) if in_class.any() else float("nan"),
                     "log_loss": float(-np.log(true_probs[in_class]).mean()) if in_class.any() else float("nan")})
    return rows


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counts = confusion_matrix(labels, predictions, labels=list(range(len(SCENE_CLASSES))))
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(SCENE_CLASSES)):
        for j in range(len(SCENE_CLASSES)):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(SCENE_CLASSES)), SCENE_CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(SCENE_CLASSES)), SCENE_CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_predictions(path: Path, stems: list[str], probs: np.ndarray) -> None:
    """The course format: aid, scene_pred, one probability column per class (tab separated)."""
    lines = ["\t".join(["aid", "scene_pred", *SCENE_CLASSES])]
    for stem, row in zip(stems, probs):
        lines.append("\t".join([stem, SCENE_CLASSES[int(row.argmax())], *(f"{p:.4f}" for p in row)]))
    path.write_text("\n".join(lines) + "\n")


def unimodal_from_run(path: str, modality: str, test_stems: list[str], device) -> np.ndarray:
    """Test-set probabilities of a separately trained unimodal run, in our test order."""
    cfg, checkpoint, _ = load_run(path)
    if cfg.model.name != modality:
        raise ConfigError(f"--{modality}-run {path} trained model.name={cfg.model.name}, not {modality}")
    splits = load_splits(cfg.data, cfg.run.seed)
    if [c.stem for c in splits["test"].clips] != test_stems:
        raise ConfigError(f"--{modality}-run {path} was trained with another test list; use runs of the same data")
    model = build_model(cfg.model, len(SCENE_CLASSES), *feature_dims(splits["test"])).to(device)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    loader = torch.utils.data.DataLoader(splits["test"], cfg.data.batch_size)
    return softmax(predict(model, loader, device)["logits"])


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run folder (runs/av_scene/<name>) or checkpoint file")
    parser.add_argument("--audio-run", help="audio-only run for the conflict analysis (default: the "
                                            "model's own audio head, if it has one)")
    parser.add_argument("--video-run", help="video-only run, likewise")
    parser.add_argument("overrides", nargs="*", help="key.sub=value over the run's config (e.g. run.device=cpu)")
    args = parser.parse_intermixed_args(argv)
    cfg, checkpoint, run_dir = load_run(args.run, args.overrides)
    device = pick_device(cfg.run.device)
    splits = load_splits(cfg.data, cfg.run.seed)
    model = build_model(cfg.model, len(SCENE_CLASSES), *feature_dims(splits["train"])).to(device)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    print(f"evaluating {checkpoint} ({MODEL_LABELS[cfg.model.name]})")
    outputs = {split: predict(model, torch.utils.data.DataLoader(splits[split], cfg.data.batch_size), device)
               for split in ("valid", "test")}
    labels = {split: out["labels"] for split, out in outputs.items()}

    rules = {}
    if cfg.model.name == "late":
        rules = late_fusion_rules(outputs["valid"], outputs["test"])
        probs = {"valid": rules[cfg.model.late_rule][0], "test": rules[cfg.model.late_rule][1]}
    else:
        probs = {split: softmax(out["logits"]) for split, out in outputs.items()}
    metrics = {split: headline_metrics(labels[split], probs[split]) for split in probs}

    # Temperature scaling of the log-probabilities, fitted on validation only.
    log_probs = {split: np.log(np.clip(p, 1e-15, None)) for split, p in probs.items()}
    temperature = fit_temperature(log_probs["valid"], labels["valid"])
    calibrated = {split: softmax(lp / temperature) for split, lp in log_probs.items()}
    calibrated_loss = {split: headline_metrics(labels[split], calibrated[split])["log_loss"] for split in probs}

    out_dir = run_dir / "evaluation"
    out_dir.mkdir(exist_ok=True)
    stems = [c.stem for c in splits["test"].clips]
    classwise = classwise_table(labels["test"], calibrated["test"])
    plot_confusion(labels["test"], probs["test"].argmax(1), out_dir / "confusion_test.png",
                   f"{MODEL_LABELS[cfg.model.name]}: test accuracy {metrics['test']['accuracy']:.3f}")
    write_predictions(out_dir / "predictions_test.csv", stems, calibrated["test"])

    report = [f"# Evaluation: {MODEL_LABELS[cfg.model.name]}", "",
              f"Checkpoint `{checkpoint}`; test = `{cfg.data.test_csv}` ({len(stems)} clips), "
              f"validation = {len(labels['valid'])} clips from held-out recording locations.", "",
              "| split | accuracy | log loss | log loss after temperature scaling | macro accuracy | macro log loss |",
              "|---|---|---|---|---|---|"]
    for split in ("valid", "test"):
        m = metrics[split]
        report.append(f"| {split} | {m['accuracy']:.4f} | {m['log_loss']:.4f} | {calibrated_loss[split]:.4f} | "
                      f"{m['accuracy_macro']:.4f} | {m['log_loss_macro']:.4f} |")
    direction = "softened: the model was over-confident" if temperature > 1 else \
        "sharpened: the model was under-confident"
    report += ["", f"Temperature fitted on validation: T = {temperature:.3f} (probabilities {direction} "
                   f"on validation). The predictions file and class-wise table use the calibrated "
                   f"probabilities; accuracy does not change with T. Accuracy and log loss are averaged over "
                   f"clips; the macro columns average each class's mean (DCASE2021 Task 1B's ranking).", ""]
    if rules:
        report += ["## Late-fusion rules (test)", "", "| rule | accuracy | log loss | how |", "|---|---|---|---|"]
        for rule in LATE_RULES:
            m = headline_metrics(labels["test"], rules[rule][1])
            report.append(f"| {rule}{' (headline)' if rule == cfg.model.late_rule else ''} | "
                          f"{m['accuracy']:.4f} | {m['log_loss']:.4f} | {rules[rule][2]} |")
        report.append("")
    report += ["## Class-wise (test, calibrated)", "",
               markdown_table(classwise, ["class", "clips", "precision", "recall", "f1", "accuracy", "log_loss"]),
               "", "Confusion matrix: `confusion_test.png`.", ""]
    (out_dir / "report.md").write_text("\n".join(report))

    audio_probs = video_probs = None
    source = ""
    if args.audio_run or args.video_run:
        if not (args.audio_run and args.video_run):
            raise ConfigError("give both --audio-run and --video-run (or neither)")
        audio_probs = unimodal_from_run(args.audio_run, "audio", stems, device)
        video_probs = unimodal_from_run(args.video_run, "video", stems, device)
        source = f"separately trained runs {args.audio_run} and {args.video_run}"
    elif "audio_logits" in outputs["test"]:
        audio_probs, video_probs = softmax(outputs["test"]["audio_logits"]), softmax(outputs["test"]["video_logits"])
        source = "the model's own audio and video heads"
    if audio_probs is not None:
        text = conflict_report(labels["test"], audio_probs, video_probs, probs["test"], SCENE_CLASSES,
                               source, gate=outputs["test"].get("gate"))
    else:
        text = (f"# Modality-conflict analysis\n\n{MODEL_LABELS[cfg.model.name]} has no unimodal heads; "
                f"rerun with --audio-run and --video-run pointing at audio-only and video-only runs.\n")
    (out_dir / "conflict_analysis.md").write_text(text)

    headline = {"test_accuracy": metrics["test"]["accuracy"], "test_log_loss": metrics["test"]["log_loss"],
                "test_log_loss_calibrated": calibrated_loss["test"],
                "test_accuracy_macro": metrics["test"]["accuracy_macro"],
                "test_log_loss_macro": metrics["test"]["log_loss_macro"],
                "valid_accuracy": metrics["valid"]["accuracy"], "valid_log_loss": metrics["valid"]["log_loss"]}
    extra = {k: v for k, v in (read_summary(run_dir) or {}).items() if k not in ("model", "metrics")}
    extra.update(params=count_parameters(model), temperature=temperature, checkpoint=str(checkpoint))
    if rules:
        extra["late_rules_test"] = {rule: headline_metrics(labels["test"], rules[rule][1]) for rule in LATE_RULES}
    (out_dir / "metrics.json").write_text(json.dumps({"headline": headline, "classwise_test": classwise,
                                                      **extra}, indent=2) + "\n")
    write_summary(run_dir, MODEL_LABELS[cfg.model.name], headline, **extra)
    print("\n".join(report[6:10]))
    print(f"report, conflict analysis, confusion matrix and predictions in {out_dir}")


if __name__ == "__main__":
    main()
