"""lhotse manifests from the generated corpus (unreadable audio and empty transcripts skipped and
listed), codes of the random-weight EnCodec stored in lhotse storage, exact resume, the 500M
limit and one-line errors."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from common.checkpoint import Checkpointer, load_checkpoint
from common.config import load_config
from valle_tts.config import Config
from valle_tts.data import CodesDataset, load_cuts, make_sampler
from valle_tts.prepare import run_stages
from valle_tts.synth_corpus import write_corpus
from valle_tts.text import TokenTable


def test_manifests_skip_unreadable_audio_and_empty_transcripts(tmp_path, capsys, make_config):
    corpus = write_corpus(tmp_path / "corpus", parts={"dev-clean": (2, 2, 100)})
    folder = corpus / "dev-clean" / "100" / "1100"
    (folder / "100_1100_000000_000000.wav").write_bytes(b"not a wav file")
    trans = folder / "100_1100.trans.tsv"
    lines = trans.read_text().splitlines()
    rec_id = lines[1].split("\t")[0]
    lines[1] = f"{rec_id}\t...\t  "  # an empty transcript
    trans.write_text("\n".join(lines) + "\n")
    config = make_config(tmp_path / "c.yaml", tmp_path)
    cfg = load_config(Config, config, ["data.train_parts=[dev-clean]", "data.valid_parts=[]",
                                       "data.test_parts=[]"])
    from valle_tts import prepare
    out = tmp_path / "manifests"
    out.mkdir()
    prepare.stage_manifests(cfg.data, corpus, out)
    prepare.stage_cuts(cfg.data, out)
    printed = capsys.readouterr().out
    assert "skipping 1 unreadable audio file(s)" in printed and "100_1100_000000_000000.wav" in printed
    assert "kept 2 of 3 cuts" in printed and f"1 with an empty transcript: {rec_id}" in printed
    from lhotse import CutSet
    cuts = CutSet.from_file(out / "cuts_dev-clean.jsonl.gz")
    assert sorted(c.supervisions[0].speaker for c in cuts) == ["101", "101"]
    assert all(c.recording.sources[0].source.startswith(str(corpus)) for c in cuts)  # not the view


def test_header_only_wav_is_skipped_and_named(tmp_path, capsys, make_config):
    import numpy as np
    import soundfile as sf
    corpus = write_corpus(tmp_path / "corpus", parts={"dev-clean": (2, 2, 100)})
    empty = corpus / "dev-clean" / "101" / "1101" / "101_1101_000001_000000.wav"
    sf.write(empty, np.zeros(0, dtype="float32"), 24000)  # a valid RIFF header, zero samples
    cfg = load_config(Config, make_config(tmp_path / "c.yaml", tmp_path),
                      ["data.train_parts=[dev-clean]", "data.valid_parts=[]", "data.test_parts=[]"])
    from valle_tts import prepare
    out = tmp_path / "manifests"
    out.mkdir()
    prepare.stage_manifests(cfg.data, corpus, out)
    prepare.stage_cuts(cfg.data, out)
    printed = capsys.readouterr().out
    assert f"skipping 1 unreadable audio file(s) (listed in {out / 'skipped_unreadable.txt'}): {empty} " \
           f"(no samples, only a header)" in printed
    assert (out / "skipped_unreadable.txt").read_text() == f"{empty}\tno samples, only a header\n"
    assert "kept 3 of 3 cuts" in printed


def test_prepared_codes_and_tokens(prepared):
    root, config = prepared
    manifests = root / "manifests"
    tokens = TokenTable.load(manifests / "tokens.txt")
    cuts = load_cuts(manifests, ["train-clean-100"]).to_eager()
    assert len(cuts) == 6
    for cut in cuts:
        codes = cut.load_codes()
        samples_24k = round(cut.duration * 24000)
        assert codes.shape == (math.ceil(samples_24k / 320), 8)  # 75 frames per second, 8 codebooks
        assert 0 <= codes.min() and codes.max() < 1024
    assert len({int(v) for c in cuts for v in c.load_codes()[:, 0]}) > 5  # codes vary with the audio
    batch = CodesDataset(tokens)[cuts.subset(first=3)]
    assert batch["codes"].shape[0] == 3 and batch["codes"].shape[2] == 8
    assert tokens.decode(batch["text"][0][:batch["text_lens"][0]]) == \
        cuts[batch["cut_ids"][0]].supervisions[0].text
    # re-running skips every finished stage
    outputs = sorted(manifests.glob("*.jsonl.gz")) + [manifests / "tokens.txt"]
    before = [p.stat().st_mtime_ns for p in outputs]
    run_stages(load_config(Config, config).data, load_config(Config, config).codec, "cpu")
    assert [p.stat().st_mtime_ns for p in outputs] == before


def test_sampler_order_depends_on_seed_and_epoch_only(prepared):
    root, config = prepared
    cfg = load_config(Config, config)
    cuts = load_cuts(root / "manifests", ["train-clean-100"])
    orders = []
    for _ in range(2):
        sampler = make_sampler(cuts, cfg.data, shuffle=True, seed=3)
        sampler.set_epoch(1)
        orders.append([[c.id for c in batch] for batch in sampler])
    assert orders[0] == orders[1] and sum(len(b) for b in orders[0]) == 6


def _final_weights(run_dir):
    path = Checkpointer(run_dir).step_checkpoints()[-1]
    return load_checkpoint(path)


def test_exact_resume_after_preemption(prepared, monkeypatch):
    from valle_tts import train
    root, config = prepared
    straight = _final_weights(train.main(["--config", config, "run.name=straight"]))

    class PreemptAfter:  # "a signal arrived" at the second step boundary (mid-epoch)
        checks = 0

        def __init__(self):
            self.signal_name = "SIGUSR1"

        @property
        def requested(self):
            PreemptAfter.checks += 1
            return PreemptAfter.checks == 2

        def exit(self, path):
            raise SystemExit(75)

    monkeypatch.setattr(train, "PreemptionFlag", PreemptAfter)
    with pytest.raises(SystemExit) as stop:
        train.main(["--config", config, "run.name=resumed"])
    assert stop.value.code == 75
    monkeypatch.undo()
    interrupted = _final_weights(root / "runs" / "valle_tts" / "resumed")
    assert interrupted["step"] == 2 and interrupted["batches_in_epoch"] > 0  # stopped mid-epoch
    resumed = _final_weights(train.main(["--config", config, "run.name=resumed", "--resume"]))
    assert resumed["step"] == straight["step"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert resumed["valid"] == straight["valid"]


def test_parameter_limit_is_one_line_error(prepared, capsys):
    from valle_tts.train import main
    root, config = prepared
    with pytest.raises(SystemExit) as stop:
        main(["--config", config, "run.name=huge", "model.d_model=2048", "model.num_layers=16",
              "model.num_heads=16"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "parameters, over the 500,000,000 limit" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("override, message", [
    ("train.modles=ar", "unknown config key train.modles; did you mean train.models?"),
    ("train.models=all", "train.models: expected one of ['both', 'ar', 'nar'], got 'all'"),
    ("data.corpus_dir=/nonexistent/LibriTTS", "lacks train-clean-100"),
    ("data.corpus=aishell", "data.corpus: expected one of ['librispeech', 'libritts', 'aishell3'], got 'aishell'"),
    ("data.corpus=aishell3", "data.text_tokens=chars does not fit data.corpus=aishell3 (Mandarin); use "
                             "data.text_tokens=pinyin"),
])
def test_user_mistakes_are_one_line(prepared, tmp_path, capsys, make_config, override, message):
    from valle_tts.train import main
    root, _ = prepared
    config = make_config(tmp_path / "c.yaml", root, data={"manifest_dir": str(tmp_path / "m")},
                          run={"root": str(tmp_path / "runs")})
    with pytest.raises(SystemExit) as stop:
        main(["--config", config, override])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert message in err.strip().splitlines()[-1]


def test_empty_validation_parts_is_one_line(prepared, capsys):
    from valle_tts.train import main
    root, config = prepared
    with pytest.raises(SystemExit) as stop:
        main(["--config", config, "run.name=novalid", "data.valid_parts=[]"])
    assert stop.value.code == 2
    assert "an empty list of corpus parts" in capsys.readouterr().err.strip().splitlines()[-1]


def test_random_codec_is_the_same_in_every_process():
    """The codes stored at preparation and the audio decoded at evaluation come from separate
    processes: the random codec must not depend on the global RNG."""
    from valle_tts.codec import EncodecCodec
    torch.manual_seed(1)
    first = EncodecCodec(pretrained=False).model.state_dict()
    torch.manual_seed(2)
    before = torch.rand(1)
    torch.manual_seed(2)
    second = EncodecCodec(pretrained=False).model.state_dict()
    assert torch.equal(torch.rand(1), before)  # the global RNG was left alone
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def test_code_extraction_resumes_at_the_unfinished_shard(prepared, tmp_path, make_config, monkeypatch):
    from valle_tts import prepare
    root, _ = prepared
    monkeypatch.setattr(prepare, "SHARD_CUTS", 2)  # 6 training cuts -> 3 shards
    config = make_config(tmp_path / "c.yaml", root, data={"manifest_dir": str(tmp_path / "m"),
                                                          "valid_parts": [], "test_parts": []})
    cfg = load_config(Config, config)
    run_stages(cfg.data, cfg.codec, "cpu")
    shard_dir = tmp_path / "m" / "codes" / "train-clean-100"
    h5 = [shard_dir / f"shard-{i:05d}.h5" for i in range(3)]
    before = [p.stat().st_mtime_ns for p in h5]
    (shard_dir / "cuts-00001.jsonl.gz").unlink()  # as if interrupted in shard 1
    (tmp_path / "m" / "cuts_codes_train-clean-100.jsonl.gz").unlink()
    run_stages(cfg.data, cfg.codec, "cpu")
    after = [p.stat().st_mtime_ns for p in h5]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    cuts = load_cuts(tmp_path / "m", ["train-clean-100"]).to_eager()
    assert len(cuts) == 6 and all(c.load_codes().shape[1] == 8 for c in cuts)


def test_duration_batches():
    from types import SimpleNamespace

    from valle_tts.prepare import _duration_batches
    cuts = [SimpleNamespace(duration=d) for d in (3.0, 1.0, 2.0, 1.0)]
    # padded cost = longest x count: [1, 1, 2] costs 6 <= 6, adding 3 would cost 12
    assert [[c.duration for c in b] for b in _duration_batches(cuts, 6.0)] == [[1.0, 1.0, 2.0], [3.0]]


def test_divergence_stops_with_one_line_and_exit_3(prepared, tmp_path, expect_divergence):
    from valle_tts.train import main
    _, config = prepared
    expect_divergence(lambda: main(["--config", config, "train.lr=1e6", f"run.root={tmp_path}", "run.name=diverged"]),
                      tmp_path / "valle_tts" / "diverged")


def test_kill_9_at_a_random_step_then_resume_is_exact(prepared, tmp_path, kill_9_and_resume):
    _, config = prepared
    kill_9_and_resume(lambda name, *extra: [sys.executable, "-m", "valle_tts.train", "--config", config,
                                            f"run.root={tmp_path}", f"run.name={name}", *extra],
                      tmp_path / "valle_tts", seed=6, summary="train_log.json")


def test_max_steps_stop_mid_epoch_is_not_finished_and_more_steps_continue_exactly(prepared, capsys):
    """train.max_steps is a budget: a stop before train.epochs leaves the run unFINISHED, and
    `--resume train.max_steps=<more>` continues it to the result of one uninterrupted run."""
    from common.run import is_finished
    from valle_tts import train
    root, config = prepared
    straight = _final_weights(train.main(["--config", config, "run.name=steps_straight"]))
    budget = train.main(["--config", config, "run.name=steps_budget", "train.max_steps=2"])
    assert not is_finished(budget) and "not marked FINISHED" in capsys.readouterr().out
    resumed = _final_weights(train.main(["--config", config, "run.name=steps_budget", "train.max_steps=0", "--resume"]))
    assert is_finished(root / "runs" / "valle_tts" / "steps_budget")
    assert resumed["step"] == straight["step"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
