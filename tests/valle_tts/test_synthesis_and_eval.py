"""WER and similarity scoring, the evaluation table, offline loader errors, and the synthesize /
evaluate commands end to end (the prompt protocol and resumed evaluation: test_eval_protocol.py)."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch

from common.config import ConfigError, load_config
from valle_tts.config import Config
from valle_tts.data import load_cuts
from valle_tts.scoring import SpeakerEmbedder, error_rate, load_whisper, word_errors


def test_word_errors_normalise_and_match_jiwer():
    refs = ["Mr. Smith has TWO dogs.", "hello world", "The café cost 100 euros.", "?!"]
    hyps = ["mister smith has 2 dog", "hello there world", "the cafe cost one hundred euros", "anything"]
    counts = [word_errors(r, h) for r, h in zip(refs, hyps)]
    # normalised: "mister smith has 2 dogs" vs "... dog" (1 sub), "hello world" vs +1 insertion,
    # numbers and accents written either way are the same words; an empty reference: 1 insertion
    assert counts == [(1, 5), (1, 2), (0, 4), (1, 0)]
    # the corpus WER is summed from the per-row counts, as jiwer sums over a list of sentences
    errors, words = map(sum, zip(*counts[:2]))
    assert error_rate(errors, words) == pytest.approx(jiwer.wer(["mister smith has 2 dogs", "hello world"],
                                                                ["mister smith has 2 dog", "hello there world"]))
    assert [error_rate(*c) for c in counts] == pytest.approx([0.2, 0.5, 0.0, 1.0])
    assert error_rate(0, 0) == 0.0


def test_similarity_identical_vs_different():
    embedder = SpeakerEmbedder("unused", "cpu", random=True)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(8000).astype(np.float32)
    b = np.sin(np.arange(8000) * 0.05).astype(np.float32)
    assert embedder.similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    assert embedder.similarity(a, b) < embedder.similarity(a, a) - 1e-4


def test_offline_loaders_fail_fast_with_one_line(tmp_path, monkeypatch):
    from valle_tts.codec import CodecConfig, build_codec
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.time()
    with pytest.raises(ConfigError, match=r"whisper model small is not in the cache \(.*small.pt\)"):
        load_whisper("small", "cpu")
    with pytest.raises(ConfigError, match="speaker model speechbrain/not-cached-here is not in the Hugging"):
        SpeakerEmbedder("speechbrain/not-cached-here", "cpu")
    with pytest.raises(ConfigError, match=r"EnCodec weights not in the cache \(.*encodec_24khz-d7cc33bc.th\)"):
        build_codec(CodecConfig(pretrained=True), "cpu")
    with pytest.raises(ConfigError, match="not a whisper model"):
        load_whisper("huge-v9", "cpu")
    assert time.time() - start < 10


def test_table_collects_runs(tmp_path):
    from common.run import write_summary
    from valle_tts.table import collect
    for name, error, language, codec in (("base_100h", "wer", None, None), ("base_960h", "wer", "en", "vocos"),
                                         ("aishell3", "cer", "zh", "encodec")):
        (tmp_path / name).mkdir()
        extra = {"language": language, "codec": codec} if language else {}  # an older summary has neither
        write_summary(tmp_path / name, "VALL-E", {f"{error}_cross": 0.12 if name == "base_100h" else 0.05,
                                                  "sim_cross": 0.5, "cap_rate_cross": 0.25}, params=3_000_000,
                      train_parts=["train" if language == "zh" else "train-clean-100"],
                      codec_pretrained=name != "base_100h", random_scorers=name == "base_100h", **extra)
    table = collect([tmp_path / "base_100h", tmp_path / "base_960h", tmp_path / "aishell3"]).splitlines()
    assert table[0].startswith("| run | caveats | language | codec | training data | params | WER/CER cont. % | "
                               "WER/CER cross %")
    assert table[2].startswith("| base_100h | random codec, random scorers | en | encodec | train-clean-100 | 3.0M "
                               "| - | 12.00 | - | 0.50")
    assert table[3].startswith("| base_960h | - | en | vocos |") and "| 5.00 |" in table[3]
    assert table[4].startswith("| aishell3 | - | zh | encodec | train | 3.0M | - | 5.00 |")  # the CER
    assert "| 0.25 |" in table[4]
    assert "WavLM-TDNN" in table[-1] and "not comparable" in table[-1]
    with pytest.raises(ConfigError, match="has no summary.json"):
        collect([tmp_path])


def test_synthesize_and_evaluate_end_to_end(trained_run, tmp_path, capsys):
    from valle_tts import evaluate, synthesize
    manifest_dir = Path(load_config(Config, trained_run / "config.yaml").data.manifest_dir)
    cut = next(iter(load_cuts(manifest_dir, ["test-clean"])))
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, cut.load_audio()[0], cut.sampling_rate)
    out = tmp_path / "out.wav"
    synthesize.main([str(trained_run), "--text", "cat", "--prompt-wav", str(prompt),
                     "--prompt-text", cut.supervisions[0].text, "--out", str(out)])
    info = sf.info(out)
    assert info.samplerate == 24000 and info.frames % 320 == 0
    out_text = capsys.readouterr().out
    assert "RANDOMLY INITIALISED EnCodec" in out_text and "x the expected length) after a" in out_text

    evaluate.main([str(trained_run)])
    summary = json.loads((trained_run / "summary.json").read_text())
    for key in ("wer_continuation", "wer_cross", "sim_continuation", "sim_cross", "wer_ground_truth",
                "wer_codec_resynthesis", "rtf", "peak_memory_mb", "cap_rate_cross", "loop_rate_continuation",
                "length_ratio_cross", "loop_rate_codec_resynthesis", "length_ratio_ground_truth"):
        assert isinstance(summary["metrics"][key], float), key
    assert summary["random_scorers"] is True and summary["codec_pretrained"] is False
    with open(trained_run / "eval" / "per_utterance.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["system"], r["mode"]) for r in rows] == [("ground_truth", "-"), ("codec_resynthesis", "-"),
                                                        ("valle", "continuation"), ("valle", "cross")]
    assert len(json.loads((manifest_dir / "eval_list_seed0.json").read_text())["items"]) == 2  # saved for reuse


def test_random_whisper_is_the_same_every_time():
    """whisper leaves its decoder positions uninitialised (they come from the checkpoint)."""
    first, second = (load_whisper("unused", "cpu", random=True).state_dict() for _ in range(2))
    for name, value in first.items():
        assert torch.isfinite(value).all() and torch.equal(value, second[name]), name
