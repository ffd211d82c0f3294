"""The evaluation protocol of issue 14: prompt audio and text describe the same speech in both modes,
overrides after options, one-line errors for an empty prompt text, per-row streaming and resumed
evaluation, and a cross-utterance row without a second utterance listed rather than dropped."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from common.config import load_config
from valle_tts.config import Config
from valle_tts.data import load_cuts
from valle_tts.evaluate import build_eval_list, prompt_for

TIMING = ("synth_s",)  # wall-clock columns: the only ones allowed to differ between two runs


def _cut(cut_id: str, speaker: str, duration: float):
    return SimpleNamespace(id=cut_id, duration=duration,
                           supervisions=[SimpleNamespace(speaker=speaker, text=f"words of {cut_id}")])


def test_cross_prompt_is_a_whole_short_utterance_of_the_speaker():
    cuts = [_cut("a1", "A", 5.0), _cut("a2", "A", 2.5), _cut("a3", "A", 2.9), _cut("a4", "A", 6.0),
            _cut("b1", "B", 5.0), _cut("b2", "B", 7.0), _cut("b3", "B", 3.5),
            _cut("c1", "C", 5.0)]
    items = build_eval_list(cuts, 4.0, 10.0, prompt_s=3.0, seed=0)
    assert items == build_eval_list(cuts, 4.0, 10.0, prompt_s=3.0, seed=0)  # fixed by the seed
    by_id = {item["id"]: item for item in items}
    assert sorted(by_id) == ["a1", "a4", "b1", "b2", "c1"]  # only 4-10 s utterances are synthesised
    # prompts come from all of the speaker's utterances, listed or not, at most prompt_s long
    assert {by_id["a1"]["prompt_id"], by_id["a4"]["prompt_id"]} <= {"a2", "a3"}
    assert {build_eval_list(cuts, 4.0, 10.0, 3.0, seed)[0]["prompt_id"] for seed in range(20)} == {"a2", "a3"}
    # none short enough: the shortest other utterance, recorded with its duration
    assert (by_id["b1"]["prompt_id"], by_id["b1"]["prompt_s"]) == ("b3", 3.5)
    assert (by_id["b2"]["prompt_id"], by_id["b2"]["prompt_s"]) == ("b3", 3.5)
    assert by_id["a1"]["prompt_text"] == f"words of {by_id['a1']['prompt_id']}"
    assert by_id["c1"]["prompt_id"] is None  # a single utterance: no cross prompt (listed by evaluate)


def test_prompt_text_and_audio_match_in_both_modes(prepared, trained_run, tmp_path):
    from valle_tts.codec import build_codec
    from valle_tts.synthesize import prompt_codes_from_wave
    root, config = prepared
    cuts = load_cuts(root / "manifests", ["test-clean"]).to_eager()
    a, b = build_eval_list(cuts, 0.3, 5.0, prompt_s=0.3, seed=0)
    assert a["prompt_id"] == b["id"] and b["prompt_id"] == a["id"]

    # cross: the whole prompt utterance (audio and codes) and its whole transcript before the target text
    codes, wave, text = prompt_for("cross", a, cuts, 24000, 0.3, 75.0)
    prompt_cut = cuts[b["id"]]
    assert (codes.numpy() == prompt_cut.load_codes()).all()
    assert len(wave) == len(prompt_cut.resample(24000).load_audio()[0])
    assert text == f"{prompt_cut.supervisions[0].text} {a['text']}"

    # continuation: the first prompt_s of the target (codes and the same span of audio), whole transcript
    codes, wave, text = prompt_for("continuation", a, cuts, 24000, 0.3, 75.0)
    frames = int(0.3 * 75)
    assert (codes.numpy() == cuts[a["id"]].load_codes()[:frames]).all()
    assert len(wave) == frames * 320  # exactly the audio those codes encode
    assert text == a["text"]

    # synthesize.py: a prompt wav comes with its transcript, so all of it is encoded (no crop)
    cfg = load_config(Config, config)
    codec = build_codec(cfg.codec, "cpu")
    audio = cuts[a["id"]].load_audio()[0]
    assert len(audio) / 24000 > cfg.synth.prompt_s
    assert prompt_codes_from_wave(codec, audio, 24000).shape == (int(np.ceil(len(audio) / 320)), 8)


def _prompt_wav(trained_run, tmp_path) -> tuple[Path, str]:
    manifest_dir = Path(load_config(Config, trained_run / "config.yaml").data.manifest_dir)
    cut = next(iter(load_cuts(manifest_dir, ["test-clean"])))
    path = tmp_path / "prompt.wav"
    sf.write(path, cut.load_audio()[0], cut.sampling_rate)
    return path, cut.supervisions[0].text


def test_overrides_after_options(trained_run, tmp_path, capsys):
    from valle_tts import evaluate, synthesize
    prompt, prompt_text = _prompt_wav(trained_run, tmp_path)
    out = tmp_path / "o.wav"
    synthesize.main([str(trained_run), "--text", "cat", "--prompt-wav", str(prompt), "--prompt-text", prompt_text,
                     "--out", str(out), "synth.top_k=3"])
    assert out.is_file()
    with pytest.raises(SystemExit) as exit_info:  # the override after the options is read and checked
        synthesize.main([str(trained_run), "--text", "cat", "--prompt-wav", str(prompt),
                         "--prompt-text", prompt_text, "--out", str(out), "synth.top_k=-1"])
    assert exit_info.value.code == 2 and "synth.top_k=-1 must be >= 0" in capsys.readouterr().err

    evaluate.main([str(trained_run), "--nar", str(trained_run), "eval.modes=[continuation]",
                   "eval.reference_rows=false"])
    with open(trained_run / "eval" / "per_utterance.csv") as f:
        assert [(r["system"], r["mode"]) for r in csv.DictReader(f)] == [("valle", "continuation")]


@pytest.mark.parametrize("prompt_text", ["", " ?! "])
def test_empty_prompt_text_is_one_error_line(trained_run, tmp_path, capsys, prompt_text):
    from valle_tts import synthesize
    prompt, _ = _prompt_wav(trained_run, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        synthesize.main([str(trained_run), "--text", "cat", "--prompt-wav", str(prompt),
                         "--prompt-text", prompt_text, "--out", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: --prompt-text") and "transcript of the prompt" in err[0]
    assert not (tmp_path / "o.wav").exists()
    listing = tmp_path / "list.tsv"
    listing.write_text(f"u1\tcat\t{prompt}\tbad dog\nu2\t\t{prompt}\tbad dog\n")
    with pytest.raises(SystemExit):
        synthesize.main([str(trained_run), "--list", str(listing), "--out-dir", str(tmp_path / "d")])
    assert capsys.readouterr().err.strip().startswith(f"error: {listing} line 2: the text")


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "eval" / "per_utterance.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def test_evaluation_streams_rows_and_resumes_after_a_kill(trained_run, monkeypatch):
    from valle_tts import evaluate
    overrides = ["eval.max_utterances=0", "eval.batch_size=1"]  # 2 utterances -> 2 batches of 4 rows
    evaluate.main([str(trained_run), *overrides])
    uninterrupted = _rows(trained_run)
    summary = json.loads((trained_run / "summary.json").read_text())["metrics"]
    assert len(uninterrupted) == 8
    assert len({(r["system"], r["mode"], r["id"]) for r in uninterrupted}) == 8
    for row in uninterrupted:  # similarity of the ground truth: against another utterance, never itself
        if row["system"] != "valle" or row["mode"] == "cross":
            assert row["prompt_id"] not in ("", row["id"]), row
    shutil.rmtree(trained_run / "eval")

    calls, dies_at_call = [], [2]
    real_score_rows = evaluate.score_rows

    def score_rows(rows, *args, **kwargs):  # counts the batches scored; fails at call dies_at_call[0]
        calls.append(len(rows))
        if len(calls) == dies_at_call[0]:
            raise RuntimeError("killed")
        return real_score_rows(rows, *args, **kwargs)

    monkeypatch.setattr(evaluate, "score_rows", score_rows)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate.main([str(trained_run), *overrides])
    assert _rows(trained_run) == uninterrupted[:4]  # the first batch was on disk before the failure
    with open(trained_run / "eval" / "per_utterance.csv", "a") as f:
        f.write("valle,cross,torn-")  # a row cut short by kill -9 in the middle of a write

    calls.clear()
    dies_at_call[0] = 0
    evaluate.main([str(trained_run), *overrides])
    assert calls == [4]  # only the unfinished batch was synthesised and scored again
    assert _rows(trained_run) == uninterrupted
    resumed = json.loads((trained_run / "summary.json").read_text())["metrics"]
    for key in summary:
        if key.startswith(("wer_", "sim_", "stop_rate_")):
            assert resumed[key] == summary[key], key

    calls.clear()
    evaluate.main([str(trained_run), *overrides, "synth.seed=1"])  # another setting: starts over
    assert calls == [4, 4] and len(_rows(trained_run)) == 8


def test_missing_second_utterance_is_listed_not_silent(trained_run, capsys):
    from valle_tts import evaluate
    # dev-clean of the tiny corpus: two speakers with one utterance each
    evaluate.main([str(trained_run), "data.test_parts=[dev-clean]", "eval.max_utterances=0"])
    out = capsys.readouterr().out
    summary = json.loads((trained_run / "summary.json").read_text())
    missing = summary["no_cross_prompt"]
    assert len(missing) == 2 and summary["metrics"]["cross_missing"] == 2.0
    assert "2 of 2 utterances have no cross-utterance row" in out and all(i in out for i in missing)
    rows = _rows(trained_run)
    assert sorted({r["id"] for r in rows}) == sorted(missing)
    assert not [r for r in rows if r["mode"] == "cross"]
    assert all(r["sim"] == "" for r in rows if r["system"] != "valle")  # no other utterance to compare with


def test_nar_run_with_another_token_table_is_refused(trained_run, tmp_path, capsys):
    from valle_tts import evaluate
    from valle_tts.text import TokenTable
    nar_run = tmp_path / "nar_run"
    shutil.copytree(trained_run, nar_run, ignore=shutil.ignore_patterns("eval"))
    tokens = TokenTable.load(nar_run / "tokens.txt")
    TokenTable(tokens.symbols[2:][::-1], tokens.kind).save(nar_run / "tokens.txt")  # same size, other ids
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(trained_run), "--nar", str(nar_run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "its token table" in err[0] and "differs" in err[0]
