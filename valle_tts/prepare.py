"""Data preparation in stages, each skipped when its output exists (icefall-style, idempotent):

  0. corpus     the toy corpus is synthesised when data.synthesise_toy_corpus is on; LibriSpeech /
                LibriTTS / AISHELL-3 is downloaded only with data.download=true
  1. manifests  lhotse's prepare_librispeech / prepare_libritts / prepare_aishell3 for the configured
                parts (AISHELL-3: the part dev is held out of train, aishell3.py)
  2. cuts       cuts with normalised transcripts, duration filter (data.min/max_duration_s); what
                is left out (unreadable or unpaired audio, missing or empty transcripts, characters
                the token set cannot spell) is counted, named and listed in skipped_<part>.txt
  3. tokens     the text token table (tokens.txt)
  4. codes      EnCodec codes for every cut, stored with lhotse's NumpyHdf5Writer as a temporal
                array `codes` (frames, codebooks) attached to each cut; shard by shard, resumable

    python -m valle_tts.prepare --config valle_tts/configs/base_100h.yaml [codec.pretrained=false]

Output in data.manifest_dir: <corpus>_{recordings,supervisions}_<part>.jsonl.gz (lhotse),
cuts_<part>.jsonl.gz, tokens.txt, codec.json, codes/<part>/shard-*.h5, cuts_codes_<part>.jsonl.gz.

Each output has a record of the settings it was made with next to it (<name>.settings.json; for the
codes, codec.json): before any work, a setting that differs from the record stops with one line that
names it and says how to redo the stage. An output whose input was made again is made again (new
cuts -> new codes). Final files are written to a temporary name and renamed, so a killed run never
leaves a truncated file behind that the next run would take as finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import soundfile as sf

from common.config import ConfigError, cli_main, load_config, resolve_path
from common.device import pick_device, set_cpu_threads
from common.log import progress
from valle_tts import aishell3
from valle_tts.codec import build_codec, codec_tokens
from valle_tts.data import mono_audio
from valle_tts.text import CHARS, TOKEN_LANGUAGE, TokenTable, lost_characters, normalize_transcript

SHARD_CUTS = 2000  # cuts per code shard: the unit of resumption
MANIFEST_KINDS = ("recordings", "supervisions")
ANOTHER_DIR = "or use another data.manifest_dir"
CORPUS_LANGUAGE = {"librispeech": "en", "libritts": "en", "aishell3": "zh"}


def _parts(cfg_data) -> list[str]:
    return list(dict.fromkeys(cfg_data.train_parts + cfg_data.valid_parts + cfg_data.test_parts))


def _manifest(out_dir: Path, corpus: str, kind: str, part: str) -> Path:
    return out_dir / f"{corpus}_{kind}_{part}.jsonl.gz"


@contextlib.contextmanager
def _atomic(path: Path):
    """Yields a temporary path next to `path` (same suffixes: lhotse picks the format from them),
    renamed over `path` when the block completes; removed if it does not."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- what each stage depends on, as config keys and values --------------------------------------

def _manifest_settings(cfg_data) -> dict:
    settings = {"data.corpus": cfg_data.corpus, "data.corpus_dir": str(resolve_path(cfg_data.corpus_dir))}
    if cfg_data.corpus == "aishell3":  # which speakers make the part dev
        settings["data.valid_speakers"] = cfg_data.valid_speakers
    return settings


def _cut_settings(cfg_data) -> dict:
    return {"data.corpus": cfg_data.corpus, "data.min_duration_s": cfg_data.min_duration_s,
            "data.max_duration_s": cfg_data.max_duration_s}


def _token_settings(cfg_data) -> dict:
    # character tokens are the normaliser's fixed alphabet; phonemes are those seen in the training parts
    if cfg_data.text_tokens == "chars":
        return {"data.text_tokens": "chars"}
    return {"data.text_tokens": cfg_data.text_tokens, "data.train_parts": cfg_data.train_parts}


def _codec_settings(cfg_codec) -> dict:
    # the codes' kind, not the decoder: EnCodec's codes serve codec.name=encodec and vocos alike
    return {"codec.name": codec_tokens(cfg_codec.name), "codec.bandwidth_kbps": cfg_codec.bandwidth_kbps,
            "codec.pretrained": cfg_codec.pretrained}


def _record_path(output: Path) -> Path:
    """cuts_x.jsonl.gz -> cuts_x.settings.json, next to it."""
    return output.with_name(output.name.split(".")[0] + ".settings.json")


def _saved(output: Path) -> dict | None:
    """{"settings": ..., "made_from": the record of the input} of `output`, None without a record."""
    path = _record_path(output)
    return json.loads(path.read_text()) if path.is_file() else None


def _write_record(output: Path, settings: dict, made_from: dict | None = None) -> None:
    """Written before the output itself, so an output never exists without its record."""
    with _atomic(_record_path(output)) as tmp:
        tmp.write_text(json.dumps({"settings": settings, "made_from": made_from}, indent=1) + "\n")


def _stop_if_changed(output: Path, saved: dict | None, given: dict, redo: str) -> None:
    """One line naming the first setting in which `given` differs from the `saved` record of `output`."""
    if saved is None:
        raise ConfigError(f"{output} has no record of the settings it was made with (an older prepare.py made "
                          f"it); delete {output.parent} to prepare it again, {ANOTHER_DIR}")
    for key, value in given.items():
        if saved.get(key) != value:
            raise ConfigError(f"{key} changed: {output} was made with {key}={json.dumps(saved.get(key))}, the "
                              f"config gives {json.dumps(value)}; {redo}")


def check_text_and_parts(cfg_data) -> None:
    """The text tokens fit the corpus's language, and AISHELL-3 parts are its own."""
    language = CORPUS_LANGUAGE[cfg_data.corpus]
    if TOKEN_LANGUAGE[cfg_data.text_tokens] != language:
        fit = "pinyin" if language == "zh" else "chars or phonemes"
        raise ConfigError(f"data.text_tokens={cfg_data.text_tokens} does not fit data.corpus={cfg_data.corpus} "
                          f"({'Mandarin' if language == 'zh' else 'English'}); use data.text_tokens={fit}")
    if cfg_data.corpus == "aishell3":
        unknown = [p for p in _parts(cfg_data) if p not in aishell3.PARTS]
        if unknown:
            raise ConfigError(f"data.corpus=aishell3 has the parts {', '.join(aishell3.PARTS)}, not "
                              f"{', '.join(unknown)}; e.g. data.train_parts=[train] data.valid_parts=[dev] "
                              f"data.test_parts=[test]")


def check_settings(cfg_data, cfg_codec, out_dir: Path) -> None:
    """Before any work: every output already in `out_dir` was made with the settings the config gives,
    or one line names the first setting that differs and how to redo that stage."""
    for part in _parts(cfg_data):
        recordings = _manifest(out_dir, cfg_data.corpus, "recordings", part)
        if recordings.is_file():
            _stop_if_changed(recordings, (_saved(recordings) or {}).get("settings"),
                             _manifest_settings(cfg_data),
                             f"delete {_manifest(out_dir, cfg_data.corpus, '*', part)} to make the manifests of "
                             f"{part} again (its cuts and codes follow), {ANOTHER_DIR}")
        cuts = out_dir / f"cuts_{part}.jsonl.gz"
        if cuts.is_file():
            _stop_if_changed(cuts, (_saved(cuts) or {}).get("settings"), _cut_settings(cfg_data),
                             f"delete it to make the cuts of {part} again (its codes follow), {ANOTHER_DIR}")
    tokens = out_dir / "tokens.txt"
    if tokens.is_file():
        _stop_if_changed(tokens, (_saved(tokens) or {}).get("settings"), _token_settings(cfg_data),
                         f"delete it to make it again, {ANOTHER_DIR}")
    codec_record = out_dir / "codec.json"
    if codec_record.is_file():
        saved = {f"codec.{key}": value for key, value in json.loads(codec_record.read_text()).items()}
        _stop_if_changed(codec_record, saved, _codec_settings(cfg_codec),
                         f"the codes in {out_dir} come from that codec: delete {out_dir / 'codes'}, "
                         f"{out_dir / 'cuts_codes_*.jsonl.gz'} and {codec_record} to make them again, {ANOTHER_DIR}")


# --- the stages ---------------------------------------------------------------------------------

def stage_corpus(cfg_data) -> Path:
    corpus_dir = resolve_path(cfg_data.corpus_dir)
    if cfg_data.synthesise_toy_corpus:
        from valle_tts.synth_corpus import write_corpus, write_mandarin_corpus
        return (write_mandarin_corpus if cfg_data.corpus == "aishell3" else write_corpus)(corpus_dir)
    missing = [p for p in _source_parts(cfg_data) if not (corpus_dir / p).is_dir()]
    if missing and cfg_data.download:
        from lhotse import recipes
        if cfg_data.corpus == "aishell3":  # one archive, unpacked into corpus_dir itself
            landed = Path(recipes.download_aishell3(corpus_dir))
        else:
            download = recipes.download_libritts if cfg_data.corpus == "libritts" else recipes.download_librispeech
            landed = Path(download(corpus_dir.parent, dataset_parts=missing))
        if landed != corpus_dir:  # lhotse unpacks into <parent>/LibriSpeech or <parent>/LibriTTS
            raise ConfigError(f"the download went to {landed}; set data.corpus_dir={landed}")
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


def _source_parts(cfg_data) -> list[str]:
    """The corpus folders the configured parts come from (AISHELL-3: its recipe reads both of its own)."""
    if cfg_data.corpus == "aishell3":
        return list(aishell3.SOURCE_PARTS)
    return _parts(cfg_data)


def _view_without(corpus_dir: Path, parts: list[str], bad: set[Path], view_dir: Path) -> Path:
    """A symlink copy of the corpus without the unreadable files, for lhotse's recipe to scan."""
    for path in corpus_dir.iterdir():  # files beside the parts (AISHELL-3's spk-info.txt)
        if path.is_file() and not (view_dir / path.name).exists():
            view_dir.mkdir(parents=True, exist_ok=True)
            (view_dir / path.name).symlink_to(path.resolve())
    for part in parts:
        for path in (corpus_dir / part).rglob("*"):
            target = view_dir / path.relative_to(corpus_dir)
            if path.is_file() and path not in bad and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path.resolve())
    return view_dir


def stage_manifests(cfg_data, corpus_dir: Path, out_dir: Path) -> None:
    from lhotse import recipes
    corpus = cfg_data.corpus
    todo = [p for p in _parts(cfg_data)
            if not all(_manifest(out_dir, corpus, kind, p).is_file() for kind in MANIFEST_KINDS)]
    if not todo:
        return
    made = out_dir / "recipe_output"  # lhotse writes here; each finished file is then moved into place

    def run(root):
        shutil.rmtree(made, ignore_errors=True)
        if corpus == "aishell3":
            recipes.prepare_aishell3(root, output_dir=made)
            aishell3.split_dev(made, root, cfg_data.valid_speakers)
        else:
            recipe = recipes.prepare_libritts if corpus == "libritts" else recipes.prepare_librispeech
            recipe(root, dataset_parts=todo, output_dir=made, num_jobs=cfg_data.num_jobs)
    sources = _source_parts(cfg_data) if corpus == "aishell3" else todo
    try:
        run(corpus_dir)
    except Exception:  # lhotse stops at the first audio file it cannot read or that is empty: find them all
        bad = {p: why for part in sources for p, why in _unreadable_audio(corpus_dir / part).items()}
        if not bad:
            raise
        listing = out_dir / "skipped_unreadable.txt"
        listing.write_text("".join(f"{p}\t{why}\n" for p, why in bad.items()))
        print(f"skipping {len(bad)} unreadable audio file(s) (listed in {listing}): "
              + ", ".join(f"{p} ({why})" for p, why in bad.items()))
        run(_view_without(corpus_dir, sources, set(bad), out_dir / "corpus_view"))
    for part in todo:
        _write_record(_manifest(out_dir, corpus, "recordings", part), _manifest_settings(cfg_data))
        for kind in MANIFEST_KINDS:
            os.replace(_manifest(made, corpus, kind, part), _manifest(out_dir, corpus, kind, part))
    shutil.rmtree(made)


def _corpus_files(cfg_data, corpus_dir: Path, part: str) -> tuple[dict[str, Path], set[str]]:
    """({recording id: audio file}, ids with a transcript row) of one part, as the corpus lays them out."""
    if cfg_data.corpus == "aishell3":
        return aishell3.corpus_files(corpus_dir, part, cfg_data.valid_speakers)
    part_dir = corpus_dir / part
    audio = {p.stem: p for ext in ("*.wav", "*.flac") for p in part_dir.rglob(ext) if not p.name.startswith("._")}
    rows = {line.split(maxsplit=1)[0] for path in part_dir.rglob("*.trans.t*") if not path.name.startswith("._")
            for line in path.read_text().splitlines() if line.strip()}
    return audio, rows


def _unpaired(audio: dict[str, Path], rows: set[str], supervised: set[str]) -> list[tuple[str, str]]:
    """(audio file or utterance id, why) for what lhotse's recipe leaves out without a word: audio
    without a transcript row, transcript rows without audio, and transcribed audio the recipe skipped
    (unreadable, or excluded by the recipe itself). Recording ids are the audio files' stems."""
    return ([(str(audio[i]), "audio file without a transcript row") for i in sorted(audio.keys() - rows)]
            + [(i, "transcript row without audio") for i in sorted(rows - audio.keys())]
            + [(str(audio[i]), "transcribed audio left out of lhotse's manifest")
               for i in sorted((audio.keys() & rows) - supervised)])


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def stage_cuts(cfg_data, out_dir: Path) -> None:
    from lhotse import CutSet, RecordingSet, SupervisionSet
    corpus_dir = resolve_path(cfg_data.corpus_dir)
    language = CORPUS_LANGUAGE[cfg_data.corpus]
    for part in _parts(cfg_data):
        target = out_dir / f"cuts_{part}.jsonl.gz"
        recordings_file = _manifest(out_dir, cfg_data.corpus, "recordings", part)
        made_from = _saved(recordings_file)
        if target.is_file():
            if (_saved(target) or {}).get("made_from") == made_from:
                continue
            print(f"{part}: its manifests were made again since its cuts were; making the cuts again")
        recordings = RecordingSet.from_file(recordings_file).to_eager()
        supervisions = SupervisionSet.from_file(_manifest(out_dir, cfg_data.corpus, "supervisions", part)).to_eager()
        for recording in recordings:  # a symlink view (see stage_manifests) -> the real file
            for source in recording.sources:
                source.source = os.path.realpath(source.source)
        cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions(
            keep_overlapping=False)
        kept, out_of_range, total = [], 0, 0
        skipped = []  # (cut id or audio file, why, detail) -> the summary line and skipped_<part>.txt
        for cut in cuts:
            total += 1
            raw = cut.supervisions[0].text or ""
            text, lost = normalize_transcript(raw, language), lost_characters(raw, language)
            if lost:
                skipped.append((cut.id, "with characters the token set cannot spell", lost))
            elif not text:
                skipped.append((cut.id, "with an empty transcript", ""))
            elif not cfg_data.min_duration_s <= cut.duration <= cfg_data.max_duration_s:
                out_of_range += 1
            else:
                cut.supervisions[0].text = text
                kept.append(cut)
        supervised = {s.recording_id for s in supervisions}
        skipped += [(name, why, "") for name, why in _unpaired(*_corpus_files(cfg_data, corpus_dir, part), supervised)]
        skipped_file = out_dir / f"skipped_{part}.txt"
        skipped_file.unlink(missing_ok=True)
        if skipped:
            skipped_file.write_text("".join(f"{name}\t{why}{': ' + detail if detail else ''}\n"
                                            for name, why, detail in skipped))
        by_why: dict[str, list[str]] = {}
        for name, why, detail in skipped:
            by_why.setdefault(why, []).append(f"{name} ({detail})" if detail else name)
        print(f"{part}: kept {len(kept)} of {total} cuts ({sum(c.duration for c in kept) / 3600:.2f} h); "
              f"{out_of_range} outside [{cfg_data.min_duration_s}, {cfg_data.max_duration_s}] s"
              + "".join(f"; {len(names)} {why}: {_some(names)}" for why, names in by_why.items())
              + (f" (all listed in {skipped_file})" if skipped else ""))
        multichannel = [c.id for c in kept if c.recording.num_channels > 1]
        if multichannel:
            print(f"{part}: {len(multichannel)} recording(s) with more than one channel, averaged into one "
                  f"(downmix) for the codes: {_some(multichannel)}")
        if not kept:
            raise ConfigError(f"{part}: no cut left after filtering; check data.corpus_dir and "
                              f"data.min_duration_s / data.max_duration_s")
        _write_record(target, _cut_settings(cfg_data), made_from)
        with _atomic(target) as tmp:
            CutSet.from_cuts(kept).to_file(tmp)


def stage_tokens(cfg_data, out_dir: Path) -> None:
    from lhotse import CutSet
    target = out_dir / "tokens.txt"
    if target.is_file():  # made with the same settings: check_settings
        return
    if cfg_data.text_tokens == "chars":
        table = TokenTable.build([CHARS], "chars")
    else:
        table = TokenTable.build((c.supervisions[0].text for part in cfg_data.train_parts
                                  for c in CutSet.from_file(out_dir / f"cuts_{part}.jsonl.gz")), cfg_data.text_tokens)
    _write_record(target, _token_settings(cfg_data))
    with _atomic(target) as tmp:
        table.save(tmp)
    print(f"token table: {len(table)} {cfg_data.text_tokens} tokens -> {target}")


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
    todo = []
    for part in _parts(cfg_data):
        final, shard_dir = out_dir / f"cuts_codes_{part}.jsonl.gz", out_dir / "codes" / part
        made_from = _saved(out_dir / f"cuts_{part}.jsonl.gz")
        if (final.is_file() or shard_dir.is_dir()) and (_saved(final) or {}).get("made_from") != made_from:
            print(f"{part}: the cuts changed since their codes were made; making the codes again")
            final.unlink(missing_ok=True)
            shutil.rmtree(shard_dir, ignore_errors=True)
        if not final.is_file():
            todo.append(part)
    if not todo:
        return
    codec = build_codec(cfg_codec, device)
    if not cfg_codec.pretrained:
        print("NOTE: codec.pretrained=false: codes come from a RANDOMLY INITIALISED EnCodec "
              "(demo/tests only; its audio is not speech)")
    codec_record = out_dir / "codec.json"
    for part in todo:
        cuts_file, final = out_dir / f"cuts_{part}.jsonl.gz", out_dir / f"cuts_codes_{part}.jsonl.gz"
        cuts = sorted(CutSet.from_file(cuts_file), key=lambda c: c.id)
        _write_record(final, _codec_settings(cfg_codec), _saved(cuts_file))  # also describes the shards
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
                    waves = [torch.from_numpy(mono_audio(c, codec.sample_rate)) for c in batch]
                    lengths = torch.tensor([len(w) for w in waves])
                    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
                    for cut, codes in zip(batch, codec.encode(padded, lengths)):
                        array = writer.store_array(cut.id, codes.T.numpy().astype("int16"),
                                                   frame_shift=1 / codec.frame_rate_hz, temporal_dim=0,
                                                   start=0)
                        coded.append(cut.with_custom("codes", array))
                    bar.update(len(batch))
            if not codec_record.is_file():  # the first codes exist: from now on the folder is this codec's
                with _atomic(codec_record) as tmp:
                    tmp.write_text(json.dumps({k.split(".", 1)[1]: v for k, v in _codec_settings(cfg_codec).items()})
                                   + "\n")
            with _atomic(done) as tmp:
                CutSet.from_cuts(coded).to_file(tmp)
        bar.close()
        combined = [c for i in range(len(shards)) for c in CutSet.from_file(shard_dir / f"cuts-{i:05d}.jsonl.gz")]
        with _atomic(final) as tmp:
            CutSet.from_cuts(combined).to_file(tmp)
        print(f"{part}: codes for {len(combined)} cuts -> {final}")


def run_stages(cfg_data, cfg_codec, device) -> Path:
    """Run every unfinished stage; returns data.manifest_dir."""
    out_dir = resolve_path(cfg_data.manifest_dir)
    check_text_and_parts(cfg_data)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_settings(cfg_data, cfg_codec, out_dir)
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
