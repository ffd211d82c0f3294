"""The Mandarin recipe: Chinese-character normalisation, pinyin tokens, CER, and the whole path on
the toy corpus in AISHELL-3's layout (lhotse's recipe -> held-out dev speakers -> codes -> training
-> synthesis -> evaluation with a random multilingual whisper, language zh)."""
from __future__ import annotations

import csv
import json

import jiwer
import pytest
import soundfile as sf

from common.config import ConfigError, load_config
from valle_tts.config import Config
from valle_tts.scoring import char_errors, load_whisper
from valle_tts.text import TokenTable, lost_characters, normalize_transcript, pinyin_symbols

TINY_MANDARIN = {"train": (3, 2, 1), "test": (1, 2, 900)}


def test_mandarin_text_pinyin_and_cer():
    assert normalize_transcript("广州，女大学生！ ", "zh") == "广州女大学生"
    assert normalize_transcript("ＧＰＵ３个", "zh") == "个"                  # full-width folded, then dropped
    assert lost_characters("用 3 个 GPU。", "zh") == "3GPU"                 # named: cut skipped, not misread
    assert lost_characters("广州，女大学生！", "zh") == ""
    assert pinyin_symbols("绿色的") == ["l", "v4", "s", "e4", "d", "e5"]     # initials, finals with tones
    assert pinyin_symbols("我们一起") == ["w", "o3", "m", "en5", "y", "i4", "q", "i3"]  # 一 before a third tone
    table = TokenTable.build(["北京天气很好"], "pinyin")
    assert table.language == "zh" and table.decode(table.encode("北京")) == "b ei3 j ing1"
    # CER on the Chinese characters of both sides, as jiwer.cer counts it
    assert char_errors("广州女大学生", "广州，女大学声。") == (1, 6)
    assert 1 / 6 == pytest.approx(jiwer.cer("广州女大学生", "广州女大学声"))
    assert char_errors("", "你好") == (2, 0)


def test_language_mismatch_is_one_line(tmp_path, make_config):
    from valle_tts.prepare import run_stages
    for data, message in (({"corpus": "aishell3"}, "data.text_tokens=chars does not fit data.corpus=aishell3 "
                                                   r"\(Mandarin\); use data.text_tokens=pinyin"),
                          ({"text_tokens": "pinyin"}, "does not fit data.corpus=libritts"),
                          ({"corpus": "aishell3", "text_tokens": "pinyin"}, "aishell3 has the parts train, dev, "
                                                                            "test, not train-clean-100")):
        cfg = load_config(Config, make_config(tmp_path / "c.yaml", tmp_path, data=data))
        with pytest.raises(ConfigError, match=message):
            run_stages(cfg.data, cfg.codec, "cpu")
    with pytest.raises(ConfigError, match="English-only and this run's text is zh; use a multilingual whisper "
                                          r"model \(eval.asr_model=medium\)"):
        load_whisper("medium.en", "cpu", random=True, language="zh")


def test_mandarin_prepare_train_synthesize_and_cer(tmp_path, make_config, capsys):
    from lhotse import CutSet

    from valle_tts import evaluate, synthesize, train
    from valle_tts.synth_corpus import write_mandarin_corpus
    write_mandarin_corpus(tmp_path / "corpus", parts=TINY_MANDARIN, words_per_utt=(1, 2))
    config = make_config(tmp_path / "zh.yaml", tmp_path,
                         data={"corpus": "aishell3", "text_tokens": "pinyin", "valid_speakers": 1,
                               "train_parts": ["train"], "valid_parts": ["dev"], "test_parts": ["test"]},
                         train={"epochs": 1}, eval={"asr_model": "medium"})
    run_dir = train.main(["--config", config, "run.name=zh"])
    manifests = tmp_path / "manifests"
    speakers = {part: {c.supervisions[0].speaker for c in CutSet.from_file(manifests / f"cuts_codes_{part}.jsonl.gz")}
                for part in ("train", "dev", "test")}
    # the last training speaker is held out for validation; the test speakers are nobody's in training
    assert speakers == {"train": {"SSB0001", "SSB0002"}, "dev": {"SSB0003"}, "test": {"SSB0900"}}
    cut = next(iter(CutSet.from_file(manifests / "cuts_codes_test.jsonl.gz")))
    assert all("\u4e00" <= c <= "\u9fff" for c in cut.supervisions[0].text)
    tokens = TokenTable.load(run_dir / "tokens.txt")
    assert tokens.kind == "pinyin" and "ing1" in tokens.symbols  # 京 jing1 / 今 jin1 ... of the toy words

    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, cut.load_audio()[0], cut.sampling_rate)
    synthesize.main([str(run_dir), "--text", "北京天气很好。", "--prompt-wav", str(prompt),
                     "--prompt-text", cut.supervisions[0].text, "--out", str(tmp_path / "out.wav")])
    assert sf.info(tmp_path / "out.wav").samplerate == 24000

    evaluate.main([str(run_dir)])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["language"] == "zh" and summary["corpus"] == "aishell3"
    for key in ("cer_cross", "cer_continuation", "cer_ground_truth", "sim_cross", "cap_rate_cross"):
        assert isinstance(summary["metrics"][key], float), key
    assert "wer_cross" not in summary["metrics"]
    with open(run_dir / "eval" / "per_utterance.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(int(r["ref_words"]) == len(r["text"]) for r in rows)  # characters, for Mandarin
    assert "CER" in capsys.readouterr().out
    assert (run_dir / "eval" / "results.csv").read_text().startswith("system,mode,utterances,cer,")


def test_aishell3_config_states_the_parameter_count_of_the_code():
    import re
    from pathlib import Path

    import torch

    from common.params import count_parameters
    from valle_tts.models.valle import VALLE
    path = Path("valle_tts/configs/aishell3.yaml")
    cfg = load_config(Config, path)
    assert (cfg.data.corpus, cfg.data.text_tokens, cfg.eval.asr_model) == ("aishell3", "pinyin", "medium")
    header = re.search(r"([\d,]+) parameters with the (\d+)-token table", path.read_text())
    every_reading = sorted({s for code in range(0x4E00, 0xA000) for s in pinyin_symbols(chr(code))})
    assert int(header[2]) == len(TokenTable(every_reading, "pinyin"))
    with torch.device("meta"):  # counted without allocating 371M parameters
        assert count_parameters(VALLE(cfg.model, int(header[2]))) == int(header[1].replace(",", ""))
