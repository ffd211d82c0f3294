"""The metric wrapper against pycocoevalcap called directly, known cases, SPICE reporting, SPIDEr
with a stand-in SPICE scorer, get_spice, and the human leave-one-out ceiling on real Flickr8k captions."""
import shutil
import zipfile

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioning import get_spice, metrics
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
        assert "python -m captioning.get_spice" in reason or "java" in reason
        assert scores.unavailable["SPICE"] == reason and "SPIDEr" in scores.unavailable
        assert "SPICE" not in scores.corpus and "CIDEr" in scores.corpus
    else:  # installed: a caption equal to its reference scores 1, a part of it less
        assert "SPICE" not in scores.unavailable, scores.unavailable
        assert scores.per_image["SPICE"]["a"] == pytest.approx(1.0) and 0 <= scores.per_image["SPICE"]["b"] < 1
        assert scores.corpus["SPIDEr"] == pytest.approx((scores.corpus["CIDEr"] + scores.corpus["SPICE"]) / 2)


class FakeSpice:
    """Stands in for pycocoevalcap's Spice (java + CoreNLP): SPICE = number of words / 10. Like the
    real one, it returns the images sorted by id, whatever order they came in."""

    def compute_score(self, references, hypotheses):
        ids = sorted(hypotheses)
        scores = [{"All": {"f": len(hypotheses[i][0].split()) / 10, "pr": 0.0, "re": 0.0}} for i in ids]
        return sum(s["All"]["f"] for s in scores) / len(ids), scores


@pytest.fixture
def fake_spice(monkeypatch):
    monkeypatch.setattr(metrics, "spice_unavailable_reason", lambda: None)
    monkeypatch.setattr(metrics, "spice_scorer", FakeSpice)


def test_spider_is_the_mean_of_cider_and_spice(fake_spice):
    refs = {"b": ["a cat sleeps on a mat", "a cat sleeps"], "a": ["a dog runs on the grass", "a dog runs"]}
    hyps = {"b": ["a cat sleeps"], "a": ["a dog runs on the grass"]}
    scores = score_tokenized(refs, hyps, meteor=False, spice=True)
    assert scores.per_image["SPICE"] == {"b": 0.3, "a": 0.6}   # matched by id, not by position
    assert scores.corpus["SPICE"] == pytest.approx(0.45)
    cider, spice = scores.per_image["CIDEr"], scores.per_image["SPICE"]
    assert scores.per_image["SPIDEr"] == pytest.approx({i: (cider[i] + spice[i]) / 2 for i in hyps})
    assert scores.corpus["SPIDEr"] == pytest.approx((scores.corpus["CIDEr"] + 0.45) / 2)
    assert "SPICE" not in scores.unavailable and "SPIDEr" not in scores.unavailable


def test_spice_missing_names_the_command_that_fixes_it(monkeypatch, tmp_path):
    monkeypatch.setattr(get_spice, "spice_dir", lambda: tmp_path)
    if shutil.which("java"):
        assert spice_unavailable_reason().endswith("once with internet: python -m captioning.get_spice")


@pytest.mark.skipif(shutil.which("java") is None, reason="get_spice needs java")
def test_get_spice_offline_is_one_line_and_a_zip_installs(monkeypatch, tmp_path, capsys):
    (tmp_path / "lib").mkdir()
    monkeypatch.setattr(get_spice, "spice_dir", lambda: tmp_path)

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")
    monkeypatch.setattr(get_spice.socket, "create_connection", offline)
    with pytest.raises(SystemExit) as exit_info:
        get_spice.main([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "machine with internet" in err

    (tmp_path / "broken.zip").write_text("not a zip")
    with pytest.raises(SystemExit):
        get_spice.main(["--zip", str(tmp_path / "broken.zip")])
    assert "is not a zip file" in capsys.readouterr().err
    corenlp = tmp_path / "stanford-corenlp-full-2015-12-09.zip"
    with zipfile.ZipFile(corenlp, "w") as archive:
        for jar in get_spice.JARS:
            archive.writestr(f"stanford-corenlp-full-2015-12-09/{jar}", jar)
    monkeypatch.setattr(get_spice, "check", lambda: 1.0)
    get_spice.main(["--zip", str(corenlp)])
    assert get_spice.missing_jars() == [] and (tmp_path / "lib" / get_spice.JARS[1]).read_text() == get_spice.JARS[1]
    assert "SPICE works" in capsys.readouterr().out


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
