"""Zero-shot evaluation on the test parts: WER (whisper) and speaker similarity (ECAPA-TDNN).

    python -m valle_tts.evaluate runs/valle_tts/base_100h [--nar RUN] [eval.asr_model=small ...]

The list, <manifest_dir>/eval_list_seed<seed>.json (built once, built again when a setting it depends
on changes): test utterances of eval.min..max_duration_s (the paper: 4-10 s of test-clean), each with
a cross-utterance prompt - another whole utterance of the same speaker of at most synth.prompt_s
seconds, drawn with eval.list_seed (the speaker's shortest other utterance when none is that short;
none when the speaker has no other test utterance: then its cross row is missing, counted and named).
Rows per utterance:
- ground_truth and codec_resynthesis (its stored codes decoded): the recording and the codec's ceiling;
- valle/continuation: prompt = the first synth.prompt_s of the utterance (codes and the same audio),
  text = its whole transcript; whisper hears the prompt audio followed by the generated audio and is
  scored against the whole transcript;
- valle/cross: prompt = the whole prompt utterance, text = its transcript + the target's; whisper hears
  the generated audio only, scored against the target's transcript.
Similarity: ECAPA cosine between the row's audio (generated part only) and its prompt audio; the
reference rows are compared with the cross prompt utterance, never with themselves. A Mandarin run
(pinyin tokens) is scored with CER (whisper language=zh) instead of WER. Stability per row
(stability.py): cut at the length cap or not, a loop in the codebook-1 codes or not, and length /
expected length (reference rows: their stored codes against their transcript's expected length).

Scaling: eval.batch_size utterances at a time are synthesised, scored and appended to
eval/per_utterance.csv (whole lines, flushed and fsynced). A rerun with the same settings
(eval/settings.json) skips the rows already there, so an interrupted evaluation - kill -9 included -
continues where it stopped; other settings start it over. results.csv and summary.json are summed
from per_utterance.csv read as a stream.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.config import ConfigError, cli_main, resolve_path
from common.device import pick_device
from common.run import write_json, write_summary
from valle_tts.codec import build_codec, codec_tokens
from valle_tts.data import load_cuts, mono_audio
from valle_tts.scoring import SCORER_RATE, RowLog, SpeakerEmbedder, load_whisper, peak_rss_mb, score_rows, summarise
from valle_tts.stability import has_loop, run_frames_per_token
from valle_tts.synthesize import attach_nar, load_model, model_text, synthesize_batch

MODES = ("continuation", "cross")


def build_eval_list(cuts, min_s: float, max_s: float, prompt_s: float, seed: int) -> list[dict]:
    """[{id, text, speaker, duration_s, prompt_id, prompt_text, prompt_s}] for the cuts of min_s..max_s
    seconds (sorted by id). The cross-utterance prompt: one of the speaker's other cuts (listed or not)
    of at most prompt_s seconds, drawn with `seed`; else the shortest other one; None when there is none."""
    by_speaker: dict[str, list] = {}
    for cut in sorted(cuts, key=lambda c: c.id):
        by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut)
    rng = np.random.default_rng(seed)
    items = []
    for cut in sorted((c for c in cuts if min_s <= c.duration <= max_s), key=lambda c: c.id):
        speaker = cut.supervisions[0].speaker
        others = [c for c in by_speaker[speaker] if c.id != cut.id]
        short = [c for c in others if c.duration <= prompt_s]
        prompt = short[rng.integers(len(short))] if short else min(others, key=lambda c: c.duration, default=None)
        items.append({"id": cut.id, "text": cut.supervisions[0].text, "speaker": speaker, "duration_s": cut.duration,
                      "prompt_id": prompt.id if prompt else None,
                      "prompt_text": prompt.supervisions[0].text if prompt else None,
                      "prompt_s": prompt.duration if prompt else None})
    return items


def eval_list(cfg, manifest_dir: Path, cuts) -> tuple[Path, list[dict], dict]:
    """(path, items, settings) of the saved list; built when missing or made with other settings."""
    settings = {"test_parts": cfg.data.test_parts, "eval.min_duration_s": cfg.eval.min_duration_s,
                "eval.max_duration_s": cfg.eval.max_duration_s, "synth.prompt_s": cfg.synth.prompt_s,
                "eval.list_seed": cfg.eval.list_seed,
                "test cuts (crc32 of ids and durations)": zlib.crc32(
                    "\n".join(f"{c.id} {c.duration}" for c in sorted(cuts, key=lambda c: c.id)).encode())}
    path = manifest_dir / f"eval_list_seed{cfg.eval.list_seed}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        saved_settings = saved.get("settings", {}) if isinstance(saved, dict) else {}
        if saved_settings == settings:
            return path, saved["items"], settings
        changed = [k for k in settings if saved_settings.get(k) != settings[k]]
        print(f"{path} was built with other settings ({', '.join(changed)}); building it again")
    items = build_eval_list(cuts, cfg.eval.min_duration_s, cfg.eval.max_duration_s, cfg.synth.prompt_s,
                            cfg.eval.list_seed)
    if not items:
        raise ConfigError(f"no test utterance of {cfg.eval.min_duration_s}-{cfg.eval.max_duration_s} s in "
                          f"{cfg.data.test_parts}; change eval.min_duration_s / eval.max_duration_s")
    write_json(path, {"settings": settings, "items": items})
    print(f"evaluation list: {len(items)} utterances -> {path}")
    return path, items, settings


def prompt_for(mode: str, item: dict, cuts, rate: int, prompt_s: float, frame_rate_hz: float):
    """(prompt codes (P, Q), prompt wave at `rate`, text the model reads) for one list item; the
    wave and the text are exactly the speech of the codes.
    continuation: the first prompt_s of the utterance itself and its whole transcript;
    cross: the whole prompt utterance, its transcript + the target's."""
    if mode == "continuation":
        cut = cuts[item["id"]]
        codes = torch.from_numpy(cut.load_codes().astype("int64"))[:int(prompt_s * frame_rate_hz)]
        wave = mono_audio(cut, rate)[:round(len(codes) * rate / frame_rate_hz)]
        return codes, wave, item["text"]
    cut = cuts[item["prompt_id"]]
    text = model_text(item["prompt_text"], item["text"], (f"transcript of {cut.id}", f"transcript of {item['id']}"))
    return torch.from_numpy(cut.load_codes().astype("int64")), mono_audio(cut, rate), text


def to_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    import torchaudio.functional as AF
    if len(wave) == 0:
        return np.zeros(0, dtype=np.float32)
    return AF.resample(torch.as_tensor(wave, dtype=torch.float32), rate, SCORER_RATE).numpy()


def stability_columns(codes1: torch.Tensor, expected_frames: float, cfg, frame_rate_hz: float) -> dict:
    """The stability measurements of one row's codebook-1 codes (frames,): loop (0/1, stability.has_loop
    with eval.loop_*) and length_ratio (frames / expected frames)."""
    loop = has_loop(codes1, max(1, round(cfg.eval.loop_max_period_s * frame_rate_hz)),
                    max(2, round(cfg.eval.loop_min_s * frame_rate_hz)))
    return {"loop": int(loop), "length_ratio": round(len(codes1) / expected_frames, 4)}


def batch_rows(items: list[dict], first_index: int, cuts, model, tokens, codec, cfg, generator,
               wav_dir: Path, frames_per_token: float) -> list[dict]:
    """The unscored rows of a batch of list items (ROW_FIELDS + 16 kHz audio for score_rows), in
    list order: reference rows, then the modes. Both modes of the batch are synthesised together.
    Reference rows' expected length: frames_per_token x the tokens of their transcript."""
    rate = codec.sample_rate
    rows: dict[str, list[dict]] = {item["id"]: [] for item in items}
    requests = []
    for index, item in enumerate(items, first_index):
        if cfg.eval.reference_rows:
            cut = cuts[item["id"]]
            other = mono_audio(cuts[item["prompt_id"]], rate) if item["prompt_id"] else None
            stored = torch.from_numpy(cut.load_codes().astype("int64"))
            resynth = codec.decode(stored.T[None])[0].numpy()
            stability = stability_columns(stored[:, 0], frames_per_token * len(tokens.encode(item["text"])), cfg,
                                          codec.frame_rate_hz)
            for system, audio in (("ground_truth", mono_audio(cut, rate)), ("codec_resynthesis", resynth)):
                rows[item["id"]].append({"system": system, "mode": "-", "id": item["id"], "text": item["text"],
                                         "prompt_id": item["prompt_id"] or "", "prompt_s": item["prompt_s"] or "",
                                         "frames": len(stored), **stability, "audio_16k": to_16k(audio, rate),
                                         "prompt_16k": None if other is None else to_16k(other, rate)})
        for mode in cfg.eval.modes:
            if mode == "cross" and item["prompt_id"] is None:
                continue  # counted and named by main
            codes, wave, text = prompt_for(mode, item, cuts, rate, cfg.synth.prompt_s, codec.frame_rate_hz)
            requests.append((index, item, mode, codes, wave, text))
    results = synthesize_batch(model, tokens, codec, [(text, codes) for *_, codes, _, text in requests], cfg.synth,
                               generator, frames_per_token=frames_per_token)
    for (index, item, mode, _, prompt_wave, _), result in zip(requests, results):
        # continuation: whisper hears the ground-truth prompt and the continuation, as one utterance
        audio = np.concatenate([prompt_wave, result.wave]) if mode == "continuation" else result.wave
        if index < cfg.eval.save_wavs:
            sf.write(wav_dir / f"{item['id']}_{mode}.wav", audio, rate)
        rows[item["id"]].append({
            "system": "valle", "mode": mode, "id": item["id"], "text": item["text"],
            "prompt_id": item["id"] if mode == "continuation" else item["prompt_id"],
            "prompt_s": round(len(prompt_wave) / rate, 3), "stopped": int(result.stopped), "frames": len(result.codes),
            **stability_columns(result.codes[:, 0], result.expected_frames, cfg, codec.frame_rate_hz),
            "synth_s": round(result.seconds, 4), "audio_s": round(len(result.wave) / rate, 4),
            "audio_16k": to_16k(audio, rate), "voice_16k": to_16k(result.wave, rate),
            "prompt_16k": to_16k(prompt_wave, rate)})  # similarity of the generated audio only
    return [row for item in items for row in rows[item["id"]]]


def checkpoint_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()} ({stat.st_size} bytes, modified {stat.st_mtime_ns})"


def resume_or_start(out_dir: Path, settings: dict) -> RowLog:
    """per_utterance.csv to continue when eval/settings.json says it was made with `settings`;
    otherwise it is removed and the settings recorded, so that rows of two settings never mix."""
    log, path = RowLog(out_dir / "per_utterance.csv"), out_dir / "settings.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved != settings:
        if log.path.is_file():
            changed = [k for k in settings if saved.get(k) != settings[k]]
            print(f"{log.path} holds rows made with other settings ({', '.join(changed)}); evaluating from the start")
            log.path.unlink()
        write_json(path, settings)
    return log


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder or checkpoint (AR, and NAR unless --nar)")
    parser.add_argument("--nar", help="run folder or checkpoint of a separately trained NAR")
    parser.add_argument("--list-only", action="store_true", help="build and save the evaluation list, then stop")
    parser.add_argument("overrides", nargs="*", help="eval.*/synth.*/data.*/run.* settings")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    device = pick_device("auto")
    cfg, model, tokens, run_dir, ckpt = load_model(args.run, device, args.overrides)
    nar_ckpt = attach_nar(model, tokens, args.nar, device) if args.nar else None
    for mode in cfg.eval.modes:
        if mode not in MODES:
            raise ConfigError(f"eval.modes: unknown mode {mode!r}; use continuation and/or cross")
    device = pick_device(cfg.run.device)
    model.to(device)
    manifest_dir = resolve_path(cfg.data.manifest_dir)
    made_by = json.loads((manifest_dir / "codec.json").read_text())["name"] \
        if (manifest_dir / "codec.json").is_file() else codec_tokens(cfg.codec.name)
    if made_by != codec_tokens(cfg.codec.name):
        raise ConfigError(f"the codes in {manifest_dir} were made by codec {made_by}; codec.name={cfg.codec.name} "
                          f"reads {codec_tokens(cfg.codec.name)} codes: evaluate with a codec of {made_by} codes, "
                          f"or prepare the test parts with codec.name={cfg.codec.name} into another data.manifest_dir")
    cuts = load_cuts(manifest_dir, cfg.data.test_parts).to_eager()
    list_path, items, list_settings = eval_list(cfg, manifest_dir, cuts)
    if args.list_only:
        print(f"{len(items)} utterances in {list_path}")
        return
    if cfg.eval.max_utterances:
        items = items[:cfg.eval.max_utterances]
    no_prompt = [item["id"] for item in items if item["prompt_id"] is None]
    if no_prompt and "cross" in cfg.eval.modes:
        print(f"NOTE: {len(no_prompt)} of {len(items)} utterances have no cross-utterance row (their speaker has no "
              f"other test utterance): {', '.join(no_prompt)}")
    long_prompts = sum(1 for item in items if item["prompt_s"] is not None and item["prompt_s"] > cfg.synth.prompt_s)
    if long_prompts:
        print(f"NOTE: {long_prompts} cross-utterance prompts are longer than synth.prompt_s={cfg.synth.prompt_s} "
              f"(no shorter utterance of their speaker; the shortest one is used whole)")

    codec = build_codec(cfg.codec, device)
    frames_per_token = run_frames_per_token(run_dir, cfg, tokens)
    if not cfg.codec.pretrained:
        print("NOTE: codec.pretrained=false: RANDOMLY INITIALISED EnCodec - the audio is not speech")
    if cfg.eval.random_scorers:
        print("NOTE: eval.random_scorers=true: RANDOMLY INITIALISED whisper and ECAPA - WER and "
              "similarity below only show that the code path runs")
    language = tokens.language  # English: WER; Mandarin: CER (scoring.py)
    unit = "cer" if language == "zh" else "wer"
    whisper_model = load_whisper(cfg.eval.asr_model, device, cfg.eval.random_scorers, language)
    embedder = SpeakerEmbedder(cfg.eval.speaker_model, device, cfg.eval.random_scorers)

    out_dir = run_dir / "eval"
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    settings = {"checkpoint": checkpoint_identity(ckpt), "--nar": nar_ckpt and checkpoint_identity(nar_ckpt),
                "device": str(device), "evaluation list": str(list_path), "frames per token": frames_per_token,
                **list_settings}
    for section in ("codec", "synth", "eval"):  # flat keys, so that a message can name the one that changed
        settings |= {f"{section}.{k}": v for k, v in dataclasses.asdict(getattr(cfg, section)).items()
                     if f"{section}.{k}" != "eval.save_wavs"}
    log = resume_or_start(out_dir, settings)
    done = log.done()
    if done:
        print(f"continuing {log.path}: {len(done)} rows already there")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    size = cfg.eval.batch_size
    for first in range(0, len(items), size):
        batch = items[first:first + size]
        expected = [(s, "-", i["id"]) for i in batch for s in ("ground_truth", "codec_resynthesis")
                    if cfg.eval.reference_rows] + \
            [("valle", m, i["id"]) for i in batch for m in cfg.eval.modes if m != "cross" or i["prompt_id"]]
        if all(key in done for key in expected):
            continue
        # the whole batch again, even if some of its rows are on disk: a batch's samples depend on
        # its composition, so a resumed evaluation gives the rows of an uninterrupted one
        seed = int(np.random.SeedSequence([cfg.synth.seed, first]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        rows = batch_rows(batch, first, cuts, model, tokens, codec, cfg, generator, wav_dir, frames_per_token)
        score_rows(rows, whisper_model, embedder, cfg.eval.asr_max_tokens, language)
        log.append([r for r in rows if (r["system"], r["mode"], r["id"]) not in done])
        print(f"evaluated {first + len(batch)}/{len(items)} utterances", flush=True)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else peak_rss_mb()

    table = summarise(log.rows())
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["system", "mode", "utterances", unit, "sim", "sim_utterances", "cap_rate",
                                    "loop_rate", "length_ratio"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, unit: row["error_rate"]} for row in table)
    metrics = {}
    for row in table:
        name = row["system"] if row["mode"] == "-" else row["mode"]
        metrics[f"{unit}_{name}"], metrics[f"sim_{name}"] = row["error_rate"], row["sim"]
        metrics[f"loop_rate_{name}"], metrics[f"length_ratio_{name}"] = row["loop_rate"], row["length_ratio"]
        if row["system"] == "valle":
            metrics[f"stop_rate_{name}"], metrics[f"cap_rate_{name}"] = row["stop_rate"], row["cap_rate"]
        print(f"{row['system']:>18} {row['mode']:>12}  n={row['utterances']:<4} "
              f"{unit.upper()} {100 * row['error_rate']:6.2f}%  "
              f"SIM {row['sim']:.3f} (n={row['sim_utterances']})  capped {row['cap_rate']:.2f}  "
              f"loops {row['loop_rate']:.2f}  length/expected {row['length_ratio']:.2f}")
    generated = [row for row in table if row["system"] == "valle"]
    metrics["rtf"] = sum(r["synth_s"] for r in generated) / max(sum(r["audio_s"] for r in generated), 1e-9)
    metrics["peak_memory_mb"] = peak_mb
    metrics["cross_missing"] = float(len(no_prompt))
    log_path = run_dir / "train_log.json"
    train_log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    valid = {f"valid_{k}": train_log["valid"][k] for k in ("ar_top10_cb1", "ar_loss", "nar_loss")
             if k in train_log.get("valid", {})}
    caveats = (["random codec"] if not cfg.codec.pretrained else []) + \
        (["random scorers"] if cfg.eval.random_scorers else [])
    name = f"VALL-E AR+NAR d{cfg.model.d_model} L{cfg.model.num_layers}" + \
        (f" ({', '.join(caveats)})" if caveats else "")
    write_summary(run_dir, model=name, metrics=valid | metrics,
                  params=train_log.get("params"), train_seconds=train_log.get("train_seconds"),
                  train_parts=cfg.data.train_parts, corpus=cfg.data.corpus, language=language,
                  codec=cfg.codec.name, codec_pretrained=cfg.codec.pretrained,
                  random_scorers=cfg.eval.random_scorers, asr_model=cfg.eval.asr_model,
                  speaker_model=cfg.eval.speaker_model, utterances=len(items), no_cross_prompt=no_prompt,
                  long_cross_prompts=long_prompts, device=str(device))
    print(f"wrote {out_dir / 'results.csv'}, {log.path} and {run_dir / 'summary.json'}")


if __name__ == "__main__":
    main()
