"""Data preparation in stages, each skipped when its output exists (icefall-style, idempotent):

  0. corpus     the toy corpus is synthesised when data.synthesise_toy_corpus is on; LibriTTS /
                LibriSpeech is downloaded only with data.download=true
  1. manifests  lhotse's prepare_libritts / prepare_librispeech for the configured parts
  2. cuts       cuts with normalised transcripts, duration filter (data.min/max_duration_s);
                empty transcripts and unreadable audio are counted, listed and skipped
  3. tokens     the text token table (tokens.txt) from the training cuts
  4. codes      EnCodec codes for every cut, stored with lhotse's NumpyHdf5Writer as a temporal
                array `codes` (frames, codebooks) attached to each cut; shard by shard, resumable

    python -m valle_tts.prepare --config valle_tts/configs/base_100h.yaml [codec.pretrained=false]

Output in data.manifest_dir: <corpus>_{recordings,supervisions}_<part>.jsonl.gz (lhotse),
cuts_<part>.jsonl.gz, tokens.txt, codec.json, codes/<part>/shard-*.h5, cuts_codes_<part>.jsonl.gz.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import soundfile as sf

from common.config import ConfigError, cli_main, load_config, resolve_path
from common.device import pick_device, set_cpu_threads
from common.log import progress
from valle_tts.codec import build_codec
from valle_tts.text import TokenTable, normalize_transcript

SHARD_CUTS = 2000  # cuts per code shard: the unit of resumption


def _parts(cfg_data) -> list[str]:
    return list(dict.fromkeys(cfg_data.train_parts + cfg_data.valid_parts + cfg_data.test_parts))


def stage_corpus(cfg_data) -> Path:
    corpus_dir = resolve_path(cfg_data.corpus_dir)
    if cfg_data.synthesise_toy_corpus:
        from valle_tts.synth_corpus import write_corpus
        return write_corpus(corpus_dir)
    missing = [p for p in _parts(cfg_data) if not (corpus_dir / p).is_dir()]
    if missing and cfg_data.download:
        from lhotse.recipes import download_librispeech, download_libritts
        download = download_libritts if cfg_data.corpus == "libritts" else download_librispeech
        download(corpus_dir.parent, dataset_parts=missing)
        missing = [p for p in missing if not (corpus_dir / p).is_dir()]
    if missing:
        raise ConfigError(f"data.corpus_dir={corpus_dir} lacks {', '.join(missing)}; point it at a "
                          f"{cfg_data.corpus} copy that has these parts, or set data.download=true")
    return corpus_dir


def _unreadable_audio(folder: Path) -> dict[Path, str]:
    """{file: why} for the audio files that soundfile cannot open or that hold no samples."""
    bad = {}
    for path in sorted(p for ext in ("*.wav", "*.flac") for p in folder.rglob(ext)):
        try:
            if sf.info(path).frames == 0:
                bad[path] = "no samples, only a header"
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            bad[path] = str(err)
    return bad


def _view_without(corpus_dir: Path, parts: list[str], bad: set[Path], view_dir: Path) -> Path:
    """A symlink copy of the corpus without the unreadable files, for lhotse's recipe to scan."""
    for part in parts:
        for path in (corpus_dir / part).rglob("*"):
            target = view_dir / path.relative_to(corpus_dir)
            if path.is_file() and path not in bad and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path.resolve())
    return view_dir


def stage_manifests(cfg_data, corpus_dir: Path, out_dir: Path) -> None:
    from lhotse.recipes import prepare_librispeech, prepare_libritts
    parts = _parts(cfg_data)
    if all((out_dir / f"{cfg_data.corpus}_{kind}_{p}.jsonl.gz").is_file()
           for p in parts for kind in ("recordings", "supervisions")):
        return

    def recipe(root):
        if cfg_data.corpus == "libritts":
            prepare_libritts(root, dataset_parts=parts, output_dir=out_dir, num_jobs=cfg_data.num_jobs)
        else:
            prepare_librispeech(root, dataset_parts=parts, output_dir=out_dir, num_jobs=cfg_data.num_jobs)
    try:
        recipe(corpus_dir)
    except Exception:  # lhotse stops at the first audio file it cannot read or that is empty: find them all
        bad = {p: why for part in parts for p, why in _unreadable_audio(corpus_dir / part).items()}
        if not bad:
            raise
        listing = out_dir / "skipped_unreadable.txt"
        listing.write_text("".join(f"{p}\t{why}\n" for p, why in bad.items()))
        print(f"skipping {len(bad)} unreadable audio file(s) (listed in {listing}): "
              + ", ".join(f"{p} ({why})" for p, why in bad.items()))
        recipe(_view_without(corpus_dir, parts, set(bad), out_dir / "corpus_view"))


def stage_cuts(cfg_data, out_dir: Path) -> None:
    from lhotse import CutSet, RecordingSet, SupervisionSet
    prefix = cfg_data.corpus
    for part in _parts(cfg_data):
        target = out_dir / f"cuts_{part}.jsonl.gz"
        if target.is_file():
            continue
        recordings = RecordingSet.from_file(out_dir / f"{prefix}_recordings_{part}.jsonl.gz").to_eager()
        supervisions = SupervisionSet.from_file(out_dir / f"{prefix}_supervisions_{part}.jsonl.gz")
        for recording in recordings:  # a symlink view (see stage_manifests) -> the real file
            for source in recording.sources:
                source.source = os.path.realpath(source.source)
        cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions(
            keep_overlapping=False)
        kept, empty, out_of_range, total = [], [], 0, 0
        for cut in cuts:
            total += 1
            text = normalize_transcript(cut.supervisions[0].text or "")
            if not text:
                empty.append(cut.id)
                continue
            if not cfg_data.min_duration_s <= cut.duration <= cfg_data.max_duration_s:
                out_of_range += 1
                continue
            cut.supervisions[0].text = text
            kept.append(cut)
        print(f"{part}: kept {len(kept)} of {total} cuts; {out_of_range} outside "
              f"[{cfg_data.min_duration_s}, {cfg_data.max_duration_s}] s; {len(empty)} with an empty "
              f"transcript" + (f": {', '.join(empty)}" if empty else ""))
        if not kept:
            raise ConfigError(f"{part}: no cut left after filtering; check data.corpus_dir and "
                              f"data.min_duration_s / data.max_duration_s")
        CutSet.from_cuts(kept).to_file(target)


def stage_tokens(cfg_data, out_dir: Path) -> None:
    from lhotse import CutSet
    target = out_dir / "tokens.txt"
    if target.is_file():
        return
    texts = (c.supervisions[0].text for part in cfg_data.train_parts
             for c in CutSet.from_file(out_dir / f"cuts_{part}.jsonl.gz"))
    table = TokenTable.build(texts, cfg_data.text_tokens)
    table.save(target)
    print(f"token table: {len(table)} {cfg_data.text_tokens} tokens -> {target}")


def _check_codec_record(out_dir: Path, cfg_codec) -> None:
    """Codes of a random-weight codec must never be mixed with (or mistaken for) real ones."""
    record = {"name": cfg_codec.name, "bandwidth_kbps": cfg_codec.bandwidth_kbps,
              "pretrained": cfg_codec.pretrained}
    path = out_dir / "codec.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != record:
            raise ConfigError(f"{out_dir} holds codes from codec {stored}, but the config asks for {record}; "
                              f"use another data.manifest_dir or make codec.* match")
    else:
        path.write_text(json.dumps(record) + "\n")


def _duration_batches(cuts: list, max_seconds: float):
    """Cuts sorted by duration, grouped so that a padded batch holds at most max_seconds of audio."""
    batch: list = []
    for cut in sorted(cuts, key=lambda c: c.duration):
        if batch and cut.duration * (len(batch) + 1) > max_seconds:
            yield batch
            batch = []
        batch.append(cut)
    if batch:
        yield batch


def stage_codes(cfg_data, cfg_codec, out_dir: Path, device) -> None:
    import torch
    from lhotse import CutSet
    from lhotse.features.io import NumpyHdf5Writer
    _check_codec_record(out_dir, cfg_codec)
    todo = [p for p in _parts(cfg_data) if not (out_dir / f"cuts_codes_{p}.jsonl.gz").is_file()]
    if not todo:
        return
    codec = build_codec(cfg_codec, device)
    if not cfg_codec.pretrained:
        print("NOTE: codec.pretrained=false: codes come from a RANDOMLY INITIALISED EnCodec "
              "(demo/tests only; its audio is not speech)")
    for part in todo:
        cuts = sorted(CutSet.from_file(out_dir / f"cuts_{part}.jsonl.gz"), key=lambda c: c.id)
        shard_dir = out_dir / "codes" / part
        shard_dir.mkdir(parents=True, exist_ok=True)
        shards = [cuts[i:i + SHARD_CUTS] for i in range(0, len(cuts), SHARD_CUTS)]
        bar = progress(total=len(cuts), desc=f"codes {part}")
        for index, shard in enumerate(shards):
            done = shard_dir / f"cuts-{index:05d}.jsonl.gz"
            if done.is_file():  # finished by an earlier (interrupted) run
                bar.update(len(shard))
                continue
            coded = []
            with NumpyHdf5Writer(shard_dir / f"shard-{index:05d}.h5", mode="w") as writer:
                for batch in _duration_batches(shard, cfg_codec.batch_seconds):
                    waves = [torch.from_numpy(c.resample(codec.sample_rate).load_audio()[0]) for c in batch]
                    lengths = torch.tensor([len(w) for w in waves])
                    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
                    for cut, codes in zip(batch, codec.encode(padded, lengths)):
                        array = writer.store_array(cut.id, codes.T.numpy().astype("int16"),
                                                   frame_shift=1 / codec.frame_rate_hz, temporal_dim=0,
                                                   start=0)
                        coded.append(cut.with_custom("codes", array))
                    bar.update(len(batch))
            tmp = shard_dir / f".cuts-{index:05d}.jsonl.gz.tmp.jsonl.gz"
            CutSet.from_cuts(coded).to_file(tmp)
            tmp.replace(done)
        bar.close()
        combined = [c for i in range(len(shards)) for c in CutSet.from_file(shard_dir / f"cuts-{i:05d}.jsonl.gz")]
        CutSet.from_cuts(combined).to_file(out_dir / f"cuts_codes_{part}.jsonl.gz")
        print(f"{part}: codes for {len(combined)} cuts -> {out_dir / f'cuts_codes_{part}.jsonl.gz'}")


def run_stages(cfg_data, cfg_codec, device) -> Path:
    """Run every unfinished stage; returns data.manifest_dir."""
    out_dir = resolve_path(cfg_data.manifest_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_dir = stage_corpus(cfg_data)
    stage_manifests(cfg_data, corpus_dir, out_dir)
    stage_cuts(cfg_data, out_dir)
    stage_tokens(cfg_data, out_dir)
    stage_codes(cfg_data, cfg_codec, out_dir, device)
    return out_dir


@cli_main
def main(argv=None):
    import argparse

    from valle_tts.config import Config
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(Config, args.config, args.overrides)
    set_cpu_threads(cfg.run.cpu_threads)
    run_stages(cfg.data, cfg.codec, pick_device(cfg.run.device))


if __name__ == "__main__":
    main()
