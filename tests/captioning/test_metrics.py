"""The metric wrapper against pycocoevalcap called directly, known cases, SPICE reporting, and the
human leave-one-out ceiling on real Flickr8k captions."""
import shutil

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioning.data import parse_captions_file, read_image_list
from captioning.metrics import human_ceiling, quick_scores, score_captions, score_tokenized, spice_unavailable_reason


def test_identical_captions_score_one():
    refs = {"a": ["a dog runs on the grass", "a dog is running"], "b": ["two men talk in a room", "men talk"],
            "c": ["a red car on a street", "a car"]}
    hyps = {k: [v[0]] for k, v in refs.items()}
    scores = score_tokenized(refs, hyps, meteor=False, spice=False)
    for n in range(1, 5):
        assert scores.corpus[f"BLEU-{n}"] == pytest.approx(1.0)
    assert scores.corpus["ROUGE-L"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in scores.per_image["BLEU-4"].values())
    assert scores.unavailable["METEOR"] == "switched off"


def test_real_captions_match_pycocoevalcap_directly(shared_data):
    """Corpus and per-image BLEU, ROUGE-L and CIDEr on 200 Flickr8k test images (first human caption
    against the other four) equal the pycocoevalcap scorers called by hand."""
    folder = shared_data / "flickr8k_text"
    captions = parse_captions_file(folder / "Flickr8k.token.txt")
    names = read_image_list(folder / "Flickr_8k.testImages.txt")[:200]
    refs = {n: [c.lower() for c in captions[n][1:]] for n in names}
    hyps = {n: [captions[n][0].lower()] for n in names}
    ours = score_tokenized(refs, hyps, meteor=False, spice=False)
    bleu, bleu_each = Bleu(4).compute_score(refs, hyps, verbose=0)
    rouge, rouge_each = Rouge().compute_score(refs, hyps)
    cider, cider_each = Cider().compute_score(refs, hyps)
    assert [ours.corpus[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(bleu)
    assert ours.corpus["ROUGE-L"] == pytest.approx(rouge)
    assert ours.corpus["CIDEr"] == pytest.approx(cider)
    assert [ours.per_image["CIDEr"][n] for n in names] == pytest.approx(list(cider_each))
    assert [ours.per_image["BLEU-4"][n] for n in names] == pytest.approx(bleu_each[3])
    assert [ours.per_image["ROUGE-L"][n] for n in names] == pytest.approx(list(rouge_each))
    # Human captions on Flickr8k: BLEU-4 around 0.2, CIDEr around 0.8 (the ceiling models chase).
    assert 0.1 < ours.corpus["BLEU-4"] < 0.35 and 0.5 < ours.corpus["CIDEr"] < 1.2


def test_spice_is_reported_unavailable_with_the_fix_or_computed():
    reason = spice_unavailable_reason()
    refs = {"a": ["a dog runs"], "b": ["a cat sleeps"]}
    scores = score_tokenized(refs, {"a": ["a dog runs"], "b": ["a cat"]}, meteor=False, spice=True)
    if reason is not None:
        assert "get_stanford_models" in reason or "java" in reason
        assert scores.unavailable["SPICE"] == reason and "SPIDEr" in scores.unavailable
        assert "SPICE" not in scores.corpus and "CIDEr" in scores.corpus


@pytest.mark.skipif(shutil.which("java") is None, reason="java is needed for the PTB tokenizer and METEOR")
def test_full_wrapper_with_java_tokenizer_meteor_and_human_ceiling():
    refs = {"1": ["A dog runs on the grass.", "A brown dog is running on grass.", "The dog runs."],
            "2": ["Two men talk in a room.", "Two people are talking.", "Men in suits talk."]}
    scores = score_captions(refs, {"1": "A dog runs on the grass!", "2": ""})
    assert scores.per_image["BLEU-1"]["1"] == pytest.approx(1.0)      # punctuation removed by PTB
    assert scores.per_image["BLEU-4"]["2"] == 0.0 and scores.per_image["METEOR"]["2"] == 0.0
    assert 0.0 < scores.corpus["METEOR"] < 1.0
    ceiling = human_ceiling(refs, meteor=False)
    assert set(ceiling) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    assert 0.0 < ceiling["ROUGE-L"] < 1.0


def test_quick_scores_without_java():
    refs = {0: ["a red circle left of a blue square"] * 5, 1: ["a green square above a red circle"] * 5}
    perfect = quick_scores(refs, {0: "a red circle left of a blue square", 1: "a green square above a red circle"})
    assert perfect["bleu4"] == pytest.approx(1.0) and perfect["cider"] > 1.0
    assert quick_scores(refs, {0: "", 1: ""})["cider"] == 0.0
