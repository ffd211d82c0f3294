"""Preparation stages know the settings they were made with (a changed setting stops with one line
that names it; a remade input remakes what depends on it), final manifests are written atomically,
and nothing is lost quietly: missing transcript rows, missing audio, characters the token set cannot
spell and stereo audio are counted and named."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from common.config import ConfigError, load_config
from valle_tts import prepare
from valle_tts.config import Config
from valle_tts.data import load_cuts
from valle_tts.synth_corpus import write_corpus


def _stop_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        prepare.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("override, saved, given, output", [
    ("data.min_duration_s=0.4", "0.3", "0.4", "cuts_train-clean-100.jsonl.gz"),
    ("data.max_duration_s=4", "5.0", "4.0", "cuts_train-clean-100.jsonl.gz"),
    ("data.corpus=librispeech", '"libritts"', '"librispeech"', "cuts_train-clean-100.jsonl.gz"),
    ("data.text_tokens=phonemes", '"chars"', '"phonemes"', "tokens.txt"),
    ("codec.bandwidth_kbps=12", "6.0", "12.0", "codec.json"),
    ("codec.pretrained=true", "false", "true", "codec.json"),
])
def test_changed_setting_stops_with_one_line(prepared, capsys, override, saved, given, output):
    root, config = prepared
    manifests = root / "manifests"
    before = {p: p.stat().st_mtime_ns for p in manifests.rglob("*")}
    line = _stop_line(capsys, ["--config", config, override])
    key = override.split("=")[0]
    assert line.startswith(f"error: {key} changed: ")
    assert f"made with {key}={saved}, the config gives {given}" in line
    assert str(manifests / output) in line and "data.manifest_dir" in line  # how to redo it
    assert {p: p.stat().st_mtime_ns for p in manifests.rglob("*")} == before  # nothing touched


def test_changed_corpus_folder_stops_before_any_work(prepared, tmp_path, capsys):
    root, config = prepared
    line = _stop_line(capsys, ["--config", config, f"data.corpus_dir={tmp_path / 'moved'}"])
    assert line.startswith(f"error: data.corpus_dir changed: "
                           f"{root / 'manifests' / 'libritts_recordings_train-clean-100.jsonl.gz'} was ")
    assert f'made with data.corpus_dir="{root / "corpus"}", the config gives "{tmp_path / "moved"}"' in line


def test_output_without_a_record_is_refused(prepared, tmp_path, make_config, capsys):
    root, _ = prepared
    manifests = tmp_path / "m"
    shutil.copytree(root / "manifests", manifests)
    (manifests / "cuts_dev-clean.settings.json").unlink()  # as made by a prepare.py that kept no record
    config = make_config(tmp_path / "c.yaml", root, data={"manifest_dir": str(manifests)})
    line = _stop_line(capsys, ["--config", config])
    assert line.endswith(f"{manifests / 'cuts_dev-clean.jsonl.gz'} has no record of the settings it was made "
                         f"with (an older prepare.py made it); delete {manifests} to prepare it again, or use "
                         f"another data.manifest_dir")


def test_remade_cuts_remake_their_codes(prepared, tmp_path, make_config, capsys):
    root, _ = prepared
    manifests = tmp_path / "m"
    config = make_config(tmp_path / "c.yaml", root, data={"manifest_dir": str(manifests),
                                                          "valid_parts": [], "test_parts": []})
    cfg = load_config(Config, config)
    prepare.run_stages(cfg.data, cfg.codec, "cpu")
    durations = sorted(c.duration for c in load_cuts(manifests, ["train-clean-100"]))
    threshold = (durations[0] + max(durations)) / 2
    longer_count = sum(d > threshold for d in durations)
    assert 0 < longer_count < len(durations)
    longer = load_config(Config, config, [f"data.min_duration_s={threshold}"])
    with pytest.raises(ConfigError, match="data.min_duration_s changed"):
        prepare.run_stages(longer.data, longer.codec, "cpu")
    (manifests / "cuts_train-clean-100.jsonl.gz").unlink()  # what the message says to do
    capsys.readouterr()
    prepare.run_stages(longer.data, longer.codec, "cpu")
    assert "the cuts changed since their codes were made" in capsys.readouterr().out
    cuts = load_cuts(manifests, ["train-clean-100"]).to_eager()
    assert len(cuts) == longer_count and all(c.duration > threshold for c in cuts)
    assert all(c.load_codes().shape[1] == 8 for c in cuts)


def test_interrupted_final_manifest_leaves_no_file(prepared, tmp_path, make_config, monkeypatch):
    """A run killed while writing cuts_codes must not leave a truncated file that the next run
    takes as finished (training would then fail with EOFError)."""
    from lhotse import CutSet
    root, _ = prepared
    manifests = tmp_path / "m"
    shutil.copytree(root / "manifests", manifests)
    final = manifests / "cuts_codes_train-clean-100.jsonl.gz"
    final.unlink()  # its shards are done: only the final manifest is left to write
    cfg = load_config(Config, make_config(tmp_path / "c.yaml", root, data={"manifest_dir": str(manifests)}))
    real_to_file = CutSet.to_file

    def killed_midway(self, path):
        real_to_file(self, path)
        with open(path, "r+b") as f:
            f.truncate(20)
        raise KeyboardInterrupt

    monkeypatch.setattr(CutSet, "to_file", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare.run_stages(cfg.data, cfg.codec, "cpu")
    assert not final.exists()
    monkeypatch.undo()
    prepare.run_stages(cfg.data, cfg.codec, "cpu")
    assert len(load_cuts(manifests, ["train-clean-100"]).to_eager()) == 6


def test_failed_codec_leaves_no_codec_record(prepared, tmp_path, make_config, monkeypatch):
    """codec.json says which codec made the codes; a pretrained codec that never loaded made none."""
    root, _ = prepared
    manifests = tmp_path / "m"
    config = make_config(tmp_path / "c.yaml", root, data={"manifest_dir": str(manifests),
                                                          "train_parts": ["dev-clean"], "valid_parts": [],
                                                          "test_parts": []})

    def offline(cfg_codec, device):
        raise ConfigError("EnCodec weights not in the cache")

    monkeypatch.setattr(prepare, "build_codec", offline)
    pretrained = load_config(Config, config, ["codec.pretrained=true"])
    with pytest.raises(ConfigError, match="EnCodec weights"):
        prepare.run_stages(pretrained.data, pretrained.codec, "cpu")
    assert not (manifests / "codec.json").exists()
    monkeypatch.undo()
    random_codec = load_config(Config, config)
    prepare.run_stages(random_codec.data, random_codec.codec, "cpu")
    assert (manifests / "codec.json").is_file() and len(load_cuts(manifests, ["dev-clean"]).to_eager()) == 2


def test_download_that_lands_elsewhere_is_one_line(tmp_path, monkeypatch, make_config):
    from lhotse import recipes

    def download(target_dir, dataset_parts):
        (target_dir / "LibriSpeech" / "dev-clean").mkdir(parents=True)
        return target_dir / "LibriSpeech"

    monkeypatch.setattr(recipes, "download_librispeech", download)
    cfg = load_config(Config, make_config(tmp_path / "c.yaml", tmp_path),
                      ["data.corpus=librispeech", f"data.corpus_dir={tmp_path / 'librispeech'}",
                       "data.download=true", "data.train_parts=[dev-clean]", "data.valid_parts=[]",
                       "data.test_parts=[]"])
    with pytest.raises(ConfigError, match=f"the download went to {tmp_path / 'LibriSpeech'}; set "
                                          f"data.corpus_dir={tmp_path / 'LibriSpeech'}"):
        prepare.stage_corpus(cfg.data)


def _dev_corpus(tmp_path, make_config):
    """A 4-utterance dev-clean corpus (2 speakers) and a config preparing only that part."""
    corpus = write_corpus(tmp_path / "corpus", parts={"dev-clean": (2, 2, 100)})
    cfg = load_config(Config, make_config(tmp_path / "c.yaml", tmp_path),
                      ["data.train_parts=[dev-clean]", "data.valid_parts=[]", "data.test_parts=[]"])
    return corpus, cfg


def _prepare_cuts(cfg, corpus, out):
    out.mkdir(exist_ok=True)
    prepare.stage_manifests(cfg.data, corpus, out)
    prepare.stage_cuts(cfg.data, out)


def test_unpaired_audio_and_transcripts_are_named(tmp_path, capsys, make_config):
    corpus, cfg = _dev_corpus(tmp_path, make_config)
    folder = corpus / "dev-clean" / "100" / "1100"
    trans = folder / "100_1100.trans.tsv"
    rows = trans.read_text().splitlines()
    untranscribed = folder / f"{rows[0].split()[0]}.wav"
    trans.write_text(rows[1] + "\n")  # the first utterance loses its transcript row
    unheard = "101_1101_000001_000000"
    (corpus / "dev-clean" / "101" / "1101" / f"{unheard}.wav").unlink()  # a row whose audio is gone
    out = tmp_path / "manifests"
    _prepare_cuts(cfg, corpus, out)
    printed = capsys.readouterr().out
    listing = out / "skipped_dev-clean.txt"
    assert "kept 2 of 2 cuts" in printed
    assert f"1 audio file without a transcript row: {untranscribed}" in printed
    assert f"1 transcript row without audio: {unheard}" in printed and str(listing) in printed
    assert sorted(listing.read_text().splitlines()) == sorted(
        [f"{untranscribed}\taudio file without a transcript row", f"{unheard}\ttranscript row without audio"])


def test_digits_and_foreign_letters_are_spelled_or_named(tmp_path, capsys, make_config):
    from lhotse import CutSet
    corpus, cfg = _dev_corpus(tmp_path, make_config)
    trans = corpus / "dev-clean" / "100" / "1100" / "100_1100.trans.tsv"
    first, second = [row.split("\t")[0] for row in trans.read_text().splitlines()]
    trans.write_text(f"{first}\tThe café in 北京 cost 100 euros.\tThe café in 北京 cost 100 euros.\n"
                     f"{second}\tCafé number 2.\tCafé number 2.\n")
    out = tmp_path / "manifests"
    _prepare_cuts(cfg, corpus, out)
    printed = capsys.readouterr().out
    assert f"1 with characters the token set cannot spell: {first} (北京)" in printed
    assert "kept 3 of 4 cuts" in printed
    texts = {c.id: c.supervisions[0].text for c in CutSet.from_file(out / "cuts_dev-clean.jsonl.gz")}
    assert first not in texts and texts[second] == "cafe number two."
    assert f"{first}\twith characters the token set cannot spell: 北京" in (out / "skipped_dev-clean.txt").read_text()


def test_stereo_audio_is_downmixed_and_said(tmp_path, capsys, make_config):
    import torch
    from lhotse.utils import fastcopy

    from valle_tts.codec import build_codec
    corpus, cfg = _dev_corpus(tmp_path, make_config)
    wav = corpus / "dev-clean" / "100" / "1100" / "100_1100_000000_000000.wav"
    left, rate = sf.read(wav, dtype="float32")
    right = np.roll(left, 700)[::-1].copy()  # another signal of the same length
    sf.write(wav, np.stack([left, right], axis=1), rate)
    manifests = tmp_path / "manifests"
    prepare.run_stages(cfg.data, cfg.codec, "cpu")
    printed = capsys.readouterr().out
    assert "dev-clean: 1 recording(s) with more than one channel, averaged into one (downmix) for the codes: " \
           "100_1100_000000_000000" in printed
    cut = next(c for c in load_cuts(manifests, ["dev-clean"]) if c.id == "100_1100_000000_000000")
    codec = build_codec(cfg.codec)
    channels = [fastcopy(cut, channel=i).resample(codec.sample_rate).load_audio()[0] for i in (0, 1)]
    downmix = torch.from_numpy((channels[0] + channels[1]) / 2)
    expected = codec.encode(downmix[None], torch.tensor([len(downmix)]))[0].T.numpy()
    stored = cut.load_codes()  # lhotse reads round(duration x 75) frames; the encoder gave ceil(samples / 320)
    assert len(stored) >= len(expected) - 1
    np.testing.assert_array_equal(stored, expected[:len(stored)])


def test_size_configs_are_nested_librispeech_sets():
    from valle_tts.data import DataConfig
    sizes = {h: load_config(Config, f"valle_tts/configs/base_{h}h.yaml").data for h in (100, 360, 960)}
    assert {(d.corpus, d.corpus_dir, d.manifest_dir) for d in sizes.values()} == \
        {(DataConfig.corpus, DataConfig.corpus_dir, DataConfig.manifest_dir)} == \
        {("librispeech", "data/LibriSpeech", "data/valle/librispeech")}
    assert sizes[100].train_parts == ["train-clean-100"] and sizes[100].train_hours == 0
    assert sizes[360].train_parts == ["train-clean-100", "train-clean-360"] and sizes[360].train_hours == 360
    assert sizes[960].train_parts == ["train-clean-100", "train-clean-360", "train-other-500"]
    assert sizes[960].train_hours == 0


def test_first_hours_takes_whole_speakers_part_by_part():
    from valle_tts.data import first_hours

    def cut(speaker, hours):
        return SimpleNamespace(duration=hours * 3600, supervisions=[SimpleNamespace(speaker=speaker)])
    part_a = [cut("19", 1.0), cut("103", 2.0), cut("19", 1.0)]  # speakers 103 (2 h) and 19 (2 h)
    part_b = [cut("7", 3.0), cut("5", 1.0), cut("5", 0.5)]      # speakers 5 (1.5 h) and 7 (3 h)

    def speakers(selected):
        return [c.supervisions[0].speaker for c in selected]
    assert speakers(first_hours([part_a, part_b], 0)) == speakers(part_a + part_b)
    assert speakers(first_hours([part_a, part_b], 5.0)) == ["103", "19", "19"]  # with speaker 5: 5.5 h
    assert speakers(first_hours([part_a, part_b], 6.0)) == ["103", "19", "19", "5", "5"]  # with 7: 8.5 h
    for small, large in ((4.0, 5.5), (5.5, 8.5)):  # each smaller set inside the larger
        assert set(map(id, first_hours([part_a, part_b], small))) < set(map(id, first_hours([part_a, part_b], large)))
