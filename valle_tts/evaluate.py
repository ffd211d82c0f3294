"""Zero-shot evaluation on the test parts: WER (whisper) and speaker similarity (ECAPA-TDNN).

    python -m valle_tts.evaluate runs/valle_tts/base_100h [--nar RUN] [eval.asr_model=small ...]

The list: test utterances of eval.min..max_duration_s (the paper: 4-10 s of test-clean) with, for
cross-utterance mode, another utterance of the same speaker as prompt (chosen with eval.list_seed);
saved once as <manifest_dir>/eval_list_seed<seed>.json, so every model is scored on the same pairs.
Modes: continuation (prompt = the first synth.prompt_s seconds of the utterance; text = its whole
transcript) and cross (prompt = synth.prompt_s of the other utterance; text = its transcript + the
target's). Reference rows: the ground truth and its codec resynthesis. Similarity is the cosine
between ECAPA embeddings of the scored audio and of the prompt audio.

Writes eval/per_utterance.csv, eval/results.csv, eval/wavs/, and summary.json in the run folder.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.config import ConfigError, cli_main, resolve_path
from common.device import pick_device
from common.run import write_summary
from valle_tts.codec import build_codec
from valle_tts.data import load_cuts
from valle_tts.scoring import SCORER_RATE, SpeakerEmbedder, load_whisper, transcribe, word_error_rate
from valle_tts.synthesize import load_model, synthesize


def build_eval_list(cuts, min_s: float, max_s: float, seed: int) -> list[dict]:
    """[{id, text, speaker, prompt_id}] for cuts of min_s..max_s seconds; prompt_id: another listed
    cut of the same speaker, None when the speaker has a single one (cross-utterance skips it)."""
    chosen = sorted((c for c in cuts if min_s <= c.duration <= max_s), key=lambda c: c.id)
    by_speaker: dict[str, list[str]] = {}
    for c in chosen:
        by_speaker.setdefault(c.supervisions[0].speaker, []).append(c.id)
    rng = random.Random(seed)
    items = []
    for c in chosen:
        speaker = c.supervisions[0].speaker
        others = [i for i in by_speaker[speaker] if i != c.id]
        items.append({"id": c.id, "text": c.supervisions[0].text, "speaker": speaker,
                      "prompt_id": rng.choice(others) if others else None})
    return items


def eval_list(cfg, manifest_dir: Path, cuts) -> list[dict]:
    path = manifest_dir / f"eval_list_seed{cfg.eval.list_seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    items = build_eval_list(cuts, cfg.eval.min_duration_s, cfg.eval.max_duration_s, cfg.eval.list_seed)
    if not items:
        raise ConfigError(f"no test utterance of {cfg.eval.min_duration_s}-{cfg.eval.max_duration_s} s in "
                          f"{cfg.data.test_parts}; change eval.min_duration_s / eval.max_duration_s")
    path.write_text(json.dumps(items, indent=1) + "\n")
    print(f"evaluation list: {len(items)} utterances -> {path}")
    return items


def prompt_for(mode: str, item: dict, cuts, rate: int, prompt_s: float, frame_rate_hz: float):
    """(prompt codes (P, Q), prompt wave at `rate`, text the model reads) for one list item.
    continuation: the first prompt_s of the utterance itself and its whole transcript;
    cross: prompt_s of another utterance of the speaker, its transcript + the target's."""
    source = cuts[item["id"]] if mode == "continuation" else cuts[item["prompt_id"]]
    codes = torch.from_numpy(source.load_codes().astype("int64"))[:int(prompt_s * frame_rate_hz)]
    wave = source.resample(rate).load_audio()[0][:int(prompt_s * rate)]
    text = item["text"] if mode == "continuation" else f"{source.supervisions[0].text} {item['text']}"
    return codes, wave, text


def to_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    import torchaudio.functional as AF
    if len(wave) == 0:
        return np.zeros(0, dtype=np.float32)
    return AF.resample(torch.as_tensor(wave, dtype=torch.float32), rate, SCORER_RATE).numpy()


def score_rows(rows: list[dict], whisper_model, embedder, max_tokens: int) -> None:
    """Fill hyp / wer / sim of rows holding `audio_16k`, `prompt_16k` and `text`."""
    hyps = transcribe(whisper_model, [r["audio_16k"] for r in rows], max_tokens) if rows else []
    _, per_utt = word_error_rate([r["text"] for r in rows], hyps)
    for row, hyp, wer in zip(rows, hyps, per_utt):
        # an empty synthesis (the AR stopped at once) has no voice: similarity 0
        voice = row.get("voice_16k", row["audio_16k"])
        sim = embedder.similarity(voice, row["prompt_16k"]) if len(voice) else 0.0
        row.update(hyp=hyp, wer=wer, sim=sim)


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder or checkpoint (AR, and NAR unless --nar)")
    parser.add_argument("--nar", help="run folder or checkpoint of a separately trained NAR")
    parser.add_argument("--list-only", action="store_true", help="build and save the evaluation list, then stop")
    parser.add_argument("overrides", nargs="*", help="eval.*/synth.*/run.* settings")
    args = parser.parse_args(argv)
    device = pick_device("auto")
    cfg, model, tokens, run_dir = load_model(args.run, device, args.overrides)
    if args.nar:
        model.nar = load_model(args.nar, device)[1].nar
    device = pick_device(cfg.run.device)
    model.to(device)
    manifest_dir = resolve_path(cfg.data.manifest_dir)
    cuts = load_cuts(manifest_dir, cfg.data.test_parts).to_eager()
    items = eval_list(cfg, manifest_dir, cuts)
    if args.list_only:
        print(f"{len(items)} utterances in {manifest_dir / f'eval_list_seed{cfg.eval.list_seed}.json'}")
        return
    if cfg.eval.max_utterances:
        items = items[:cfg.eval.max_utterances]
    for mode in cfg.eval.modes:
        if mode not in ("continuation", "cross"):
            raise ConfigError(f"eval.modes: unknown mode {mode!r}; use continuation and/or cross")

    codec = build_codec(cfg.codec, device)
    if not cfg.codec.pretrained:
        print("NOTE: codec.pretrained=false: RANDOMLY INITIALISED EnCodec - the audio is not speech")
    if cfg.eval.random_scorers:
        print("NOTE: eval.random_scorers=true: RANDOMLY INITIALISED whisper and ECAPA - WER and "
              "similarity below only show that the code path runs")
    whisper_model = load_whisper(cfg.eval.asr_model, device, cfg.eval.random_scorers)
    embedder = SpeakerEmbedder(cfg.eval.speaker_model, device, cfg.eval.random_scorers)

    rate = codec.sample_rate
    generator = torch.Generator().manual_seed(cfg.synth.seed)
    wav_dir = run_dir / "eval" / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows, synth_seconds, audio_seconds = [], 0.0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for n, item in enumerate(items):
        cut = cuts[item["id"]]
        truth = cut.resample(rate).load_audio()[0]
        first_s = truth[:int(cfg.synth.prompt_s * rate)]
        base = {"id": item["id"], "text": item["text"]}
        if cfg.eval.reference_rows:
            rows.append(base | {"system": "ground_truth", "mode": "-", "audio_16k": to_16k(truth, rate),
                                "prompt_16k": to_16k(first_s, rate)})
            codes = torch.from_numpy(cut.load_codes().astype("int64"))
            resynth = codec.decode(codes.T[None])[0].numpy()
            rows.append(base | {"system": "codec_resynthesis", "mode": "-", "audio_16k": to_16k(resynth, rate),
                                "prompt_16k": to_16k(first_s, rate)})
        for mode in cfg.eval.modes:
            if mode == "cross" and item["prompt_id"] is None:
                continue
            prompt_codes, prompt_wave, text = prompt_for(mode, item, cuts, rate, cfg.synth.prompt_s,
                                                         codec.frame_rate_hz)
            result = synthesize(model, tokens, codec, text, prompt_codes, cfg.synth, generator)
            synth_seconds += result.seconds
            audio_seconds += len(result.wave) / rate
            # Continuation: the model says the rest of the utterance, scored against the full text
            # after the ground-truth prompt is put back in front (as in the paper).
            audio = np.concatenate([first_s, result.wave]) if mode == "continuation" else result.wave
            if n < cfg.eval.save_wavs:
                sf.write(wav_dir / f"{item['id']}_{mode}.wav", audio, rate)
            # similarity on the generated audio only (the prompt itself would inflate it)
            rows.append(base | {"system": "valle", "mode": mode, "audio_16k": to_16k(audio, rate),
                                "voice_16k": to_16k(result.wave, rate),
                                "prompt_16k": to_16k(prompt_wave, rate), "stopped": result.stopped,
                                "frames": len(result.codes)})
        print(f"synthesised {n + 1}/{len(items)} ({synth_seconds:.1f} s so far)", flush=True)
    peak_mb = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 20

    start = time.time()
    score_rows(rows, whisper_model, embedder, cfg.eval.asr_max_tokens)
    print(f"scored {len(rows)} rows in {time.time() - start:.1f} s")
    out_dir = run_dir / "eval"
    fields = ["system", "mode", "id", "text", "hyp", "wer", "sim", "stopped", "frames"]
    with open(out_dir / "per_utterance.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    metrics, table = {}, []
    for system, mode in dict.fromkeys((r["system"], r["mode"]) for r in rows):
        group = [r for r in rows if r["system"] == system and r["mode"] == mode]
        wer, _ = word_error_rate([r["text"] for r in group], [r["hyp"] for r in group])
        sim = float(np.mean([r["sim"] for r in group]))
        name = system if mode == "-" else f"{mode}"
        metrics[f"wer_{name}"], metrics[f"sim_{name}"] = wer, sim
        if system == "valle":
            metrics[f"stop_rate_{mode}"] = float(np.mean([r["stopped"] for r in group]))
        table.append({"system": system, "mode": mode, "utterances": len(group), "wer": wer, "sim": sim})
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    for row in table:
        print(f"{row['system']:>18} {row['mode']:>12}  n={row['utterances']:<4} WER {100 * row['wer']:6.2f}%  "
              f"SIM {row['sim']:.3f}")
    metrics["rtf"] = synth_seconds / max(audio_seconds, 1e-9)
    metrics["peak_memory_mb"] = peak_mb
    log_path = run_dir / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    valid = {f"valid_{k}": log["valid"][k] for k in ("ar_top10_cb1", "ar_loss", "nar_loss")
             if k in log.get("valid", {})}
    caveats = (["random codec"] if not cfg.codec.pretrained else []) + \
        (["random scorers"] if cfg.eval.random_scorers else [])
    name = f"VALL-E AR+NAR d{cfg.model.d_model} L{cfg.model.num_layers}" + \
        (f" ({', '.join(caveats)})" if caveats else "")
    write_summary(run_dir, model=name, metrics=valid | metrics,
                  params=log.get("params"), train_seconds=log.get("train_seconds"),
                  train_parts=cfg.data.train_parts, codec_pretrained=cfg.codec.pretrained,
                  random_scorers=cfg.eval.random_scorers, asr_model=cfg.eval.asr_model,
                  utterances=len(items), device=str(device))
    print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'per_utterance.csv'} and {run_dir / 'summary.json'}")


if __name__ == "__main__":
    main()
