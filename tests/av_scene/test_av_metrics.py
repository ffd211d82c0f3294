import numpy as np
from sklearn.metrics import balanced_accuracy_score, log_loss, precision_recall_fscore_support

from av_scene.conflict import agreement_breakdown, conflict_report
from av_scene.evaluate import classwise_table, fit_temperature
from av_scene.predict import headline_metrics, softmax

CLASSES = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
           "street_pedestrian", "street_traffic", "tram"]


def test_log_loss_matches_scikit_learn_and_a_hand_computed_case():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]])
    labels = np.array([0, 2, 1])
    metrics = headline_metrics(labels, probs)
    assert np.isclose(metrics["log_loss"], -(np.log(0.7) + np.log(0.8) + np.log(0.25)) / 3)
    assert np.isclose(metrics["log_loss"], log_loss(labels, probs, labels=[0, 1, 2]))
    assert np.isclose(metrics["accuracy"], 2 / 3)
    # Classes absent from the labels still count as columns (sklearn would refuse without labels=).
    rng = np.random.default_rng(0)
    probs = softmax(rng.standard_normal((40, 10)))
    labels = rng.integers(0, 4, 40)
    assert np.isclose(headline_metrics(labels, probs)["log_loss"], log_loss(labels, probs, labels=list(range(10))))


def test_macro_averages_weigh_every_class_present_alike():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    labels = np.array([0, 0, 0, 2])  # class 0 three times, class 2 once, class 1 absent
    metrics = headline_metrics(labels, probs)
    assert np.isclose(metrics["accuracy"], 3 / 4) and np.isclose(metrics["accuracy_macro"], (2 / 3 + 1) / 2)
    class_0 = -(np.log(0.7) + np.log(0.6) + np.log(0.2)) / 3
    assert np.isclose(metrics["log_loss_macro"], (class_0 - np.log(0.8)) / 2)
    rng = np.random.default_rng(3)
    probs = softmax(rng.standard_normal((300, 10)))
    labels = rng.choice(10, 300, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.0])
    assert np.isclose(headline_metrics(labels, probs)["accuracy_macro"],
                      balanced_accuracy_score(labels, probs.argmax(1)))


def test_temperature_scaling_recovers_the_overconfidence():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4000, 10)) * 2
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits)])  # calibrated at T = 1
    assert abs(fit_temperature(3.0 * logits, labels) - 3.0) < 0.2


def test_classwise_table_matches_scikit_learn():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, 200)
    probs = softmax(rng.standard_normal((200, 10)) + 2 * np.eye(10)[labels])
    rows = classwise_table(labels, probs)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, probs.argmax(1), labels=list(range(10)),
                                                               zero_division=0)
    np.testing.assert_allclose([r["precision"] for r in rows], precision)
    np.testing.assert_allclose([r["f1"] for r in rows], f1)
    np.testing.assert_allclose([r["accuracy"] for r in rows], recall)


def test_agreement_breakdown_counts_who_was_right():
    labels = np.array([0, 0, 1, 1, 2])
    audio = np.array([0, 0, 1, 2, 1])
    video = np.array([0, 1, 0, 1, 0])
    fused = np.array([0, 0, 0, 1, 2])
    rows = {r["case"]: (r["clips"], r["fused_right"]) for r in agreement_breakdown(labels, audio, video, fused)}
    assert rows == {"agree, both right": (1, 1), "agree, both wrong": (0, 0), "disagree, audio right": (2, 1),
                    "disagree, video right": (1, 1), "disagree, both wrong": (1, 1)}


def test_conflict_report_names_the_class_that_needs_both():
    labels = np.repeat(np.arange(10), 4)
    onehot = np.eye(10)[labels]
    audio, video = onehot.copy(), onehot.copy()
    audio[labels == 7] = np.eye(10)[5]   # audio mistakes street_pedestrian for public_square
    video[labels == 7] = np.eye(10)[8]   # video mistakes it for street_traffic
    text = conflict_report(labels, audio * 0.9 + 0.01, video * 0.9 + 0.01, onehot * 0.9 + 0.01, CLASSES, "test")
    assert "**street_pedestrian** needs both modalities" in text
    assert "| audio | street_pedestrian | public_square | 4 | 1.00 |" in text
