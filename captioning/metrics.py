"""Caption metrics through pycocoevalcap (the COCO caption evaluation code): BLEU-1..4, METEOR,
ROUGE-L, CIDEr(-D), SPICE and SPIDEr = (CIDEr + SPICE) / 2, corpus-level and per image.

Captions are first tokenised by the Stanford PTB tokenizer that pycocoevalcap ships (java), as in
the official COCO evaluation. SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap would download
on first use; this code never starts that download (`python -m captioning.get_spice` does, and
checks SPICE). Where it is absent or cannot run, SPICE and SPIDEr are reported unavailable with the
reason and the fix, and every other metric is still computed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import shutil

import numpy as np

from captioning.data import tokenize

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE", "SPIDEr")


@dataclasses.dataclass
class CaptionScores:
    corpus: dict[str, float]                   # metric -> corpus score
    per_image: dict[str, dict[str, float]]     # metric -> image id -> score
    unavailable: dict[str, str]                # metric -> why not, and how to fix it


@functools.cache
def _meteor_scorer():
    """One METEOR java process per Python process: starting it (loading its paraphrase table)
    takes seconds, and the human ceiling scores five rounds."""
    from pycocoevalcap.meteor.meteor import Meteor
    return Meteor()


def spice_unavailable_reason() -> str | None:
    """None when SPICE can be tried; else why not and the fix."""
    if shutil.which("java") is None:
        return "needs java on PATH (SPICE wants Java 8: conda install -c conda-forge openjdk=8)"
    from captioning.get_spice import missing_jars, spice_dir
    if missing_jars():
        return (f"Stanford CoreNLP 3.6.0 is not in {spice_dir() / 'lib'}; fetch and check it once with internet: "
                f"python -m captioning.get_spice")
    return None


def spice_scorer():
    """pycocoevalcap's SPICE (java); only called when spice_unavailable_reason() is None, since its
    constructor would otherwise start a 400 MB download."""
    from pycocoevalcap.spice.spice import Spice
    return Spice()


def ptb_tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """{id: [caption, ...]} -> the same, PTB-tokenised, lower-cased, punctuation removed. Without
    java, falls back to captioning.data.tokenize."""
    if shutil.which("java") is None:
        return {k: [" ".join(tokenize(c)) for c in v] for k, v in captions.items()}
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def score_tokenized(references: dict[str, list[str]], hypotheses: dict[str, list[str]],
                    meteor: bool = True, spice: bool = True) -> CaptionScores:
    """Tokenised {id: [refs]} and {id: [hypothesis]} -> corpus and per-image scores."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    ids = list(hypotheses)
    corpus, per_image, unavailable = {}, {}, {}

    def record(name, score, scores):
        corpus[name] = float(score)
        per_image[name] = {i: float(s) for i, s in zip(ids, scores)}

    with contextlib.redirect_stdout(io.StringIO()):   # Bleu prints its length statistics
        bleu, bleu_per_image = Bleu(4).compute_score(references, hypotheses, verbose=0)
    for n in range(4):
        record(f"BLEU-{n + 1}", bleu[n], bleu_per_image[n])
    if meteor and shutil.which("java"):
        record("METEOR", *_meteor_scorer().compute_score(references, hypotheses))
    else:
        unavailable["METEOR"] = "needs java on PATH" if meteor else "switched off"
    record("ROUGE-L", *Rouge().compute_score(references, hypotheses))
    record("CIDEr", *Cider().compute_score(references, hypotheses))
    reason = spice_unavailable_reason() if spice else "switched off"
    if reason is None:
        try:
            score, scores = spice_scorer().compute_score(references, hypotheses)
            # pycocoevalcap sorts the ids for SPICE
            by_id = dict(zip(sorted(ids), (s["All"]["f"] for s in scores)))
            record("SPICE", score, [by_id[i] for i in ids])
        except Exception as err:  # a java failure must not lose the other metrics
            reason = (f"SPICE failed ({type(err).__name__}: {str(err)[:200]}); it needs Java 8 and CoreNLP 3.6.0: "
                      f"python -m captioning.get_spice --check says what is wrong")
    if reason is not None:
        unavailable["SPICE"] = reason
        unavailable["SPIDEr"] = "needs SPICE: " + reason
    else:
        record("SPIDEr", (corpus["CIDEr"] + corpus["SPICE"]) / 2,
               [(per_image["CIDEr"][i] + per_image["SPICE"][i]) / 2 for i in ids])
    return CaptionScores(corpus, per_image, unavailable)


def score_captions(references: dict[str, list[str]], hypotheses: dict[str, str],
                   meteor: bool = True, spice: bool = True) -> CaptionScores:
    """Raw {id: [reference captions]} and {id: generated caption} -> scores (PTB-tokenised first)."""
    refs = ptb_tokenize(references)
    hyps = ptb_tokenize({k: [v] for k, v in hypotheses.items()})
    return score_tokenized(refs, hyps, meteor, spice)


def quick_scores(references: dict[str, list[str]], hypotheses: dict[str, str]) -> dict[str, float]:
    """BLEU-4 and CIDEr without java (our tokeniser): the per-epoch validation numbers."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    refs = {k: [" ".join(tokenize(c)) for c in v] for k, v in references.items()}
    hyps = {k: [" ".join(tokenize(v)) or "<empty>"] for k, v in hypotheses.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    return {"bleu4": float(bleu[3]), "cider": float(Cider().compute_score(refs, hyps)[0])}


def human_ceiling(references: dict[str, list[str]], meteor: bool = True) -> dict[str, float]:
    """Each image's k-th human caption scored against its other captions (leave one out), the
    metric averaged over k. A ceiling to read the model's numbers against (humans see one fewer
    reference than the model does, which lowers their scores slightly)."""
    refs = ptb_tokenize(references)
    rounds = min(len(v) for v in refs.values())
    totals: dict[str, list[float]] = {}
    for k in range(rounds):
        hyps = {i: [v[k]] for i, v in refs.items()}
        others = {i: v[:k] + v[k + 1:] for i, v in refs.items()}
        scores = score_tokenized(others, hyps, meteor=meteor, spice=False)
        for name, value in scores.corpus.items():
            totals.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in totals.items()}
