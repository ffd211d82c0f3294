"""The two scorers of the evaluation: WER with openai-whisper (+ its English text normaliser and
jiwer; for Mandarin, CER: whisper with language=zh, Chinese characters only) and speaker
similarity with speechbrain's ECAPA-TDNN (cosine of embeddings), and the per-utterance results
file they stream to.

Every pretrained loader looks in its cache first; offline (HF_HUB_OFFLINE=1 or VALLE_OFFLINE=1)
and not cached, it stops at once with one line naming the model, the cache path and how to fetch
it. `random=True` builds small randomly initialised models of the same classes (tests, demo).

Rows are scored a bounded batch at a time (`score_rows`) and appended to per_utterance.csv as whole,
fsynced lines (`RowLog`); the totals are summed from that file read as a stream (`summarise`), so
memory does not grow with the number of rows. The benchmark measures it with random-weight scorers:

    python -m valle_tts.scoring --bench 100     # then --bench 2000: peak resident memory of each
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

from common.config import ConfigError, cli_main

SCORER_RATE = 16000  # both whisper and the ECAPA model take 16 kHz audio
MIN_EMBED_SAMPLES = SCORER_RATE // 4  # shorter audio is zero-padded to 0.25 s before embedding
# per_utterance.csv: prompt_id / prompt_s name the audio the similarity compares with; errors and
# ref_words make the corpus WER a sum over rows; synth_s / audio_s give the real-time factor; stopped
# (generated rows: 1 = on the end token, 0 = cut at the length cap), loop and length_ratio measure
# stability (stability.py)
ROW_FIELDS = ["system", "mode", "id", "prompt_id", "prompt_s", "text", "hyp", "errors", "ref_words", "wer",
              "sim", "stopped", "frames", "loop", "length_ratio", "synth_s", "audio_s"]


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0") for v in ("HF_HUB_OFFLINE", "VALLE_OFFLINE"))


def whisper_cache_path(name: str) -> Path:
    import whisper
    if name not in whisper._MODELS:
        raise ConfigError(f"eval.asr_model={name!r} is not a whisper model; use one of "
                          f"{', '.join(whisper.available_models())}")
    root = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    return root / os.path.basename(whisper._MODELS[name])


def load_whisper(name: str, device, random: bool = False, language: str = "en"):
    """language: what the audio is in; another than English needs a multilingual model (not *.en)."""
    import whisper
    from whisper.model import ModelDimensions, Whisper
    if language != "en" and name.endswith(".en"):
        raise ConfigError(f"eval.asr_model={name} is English-only and this run's text is {language}; use a "
                          f"multilingual whisper model (eval.asr_model={name[:-3]})")
    if random:  # English-only vocabulary (51864; multilingual 51865), one tiny layer each side
        torch.manual_seed(0)
        dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                               n_vocab=51864 if language == "en" else 51865, n_text_ctx=448, n_text_state=64,
                               n_text_head=2, n_text_layer=1)
        model = Whisper(dims)
        # whisper leaves the decoder's positions uninitialised (torch.empty: they come from the
        # checkpoint): random memory, sometimes NaN, made the random scorer's output vary run to run
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
        return model.to(device).eval()
    path = whisper_cache_path(name)
    if not path.is_file() and _offline():
        raise ConfigError(f"whisper model {name} is not in the cache ({path}) and offline mode is set; "
                          f"fetch it on a machine with internet: python -c \"import whisper; "
                          f"whisper.load_model('{name}')\" and copy {path.name} to {path.parent}/")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        return whisper.load_model(name, device=device)
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"whisper model {name} could not be loaded ({type(err).__name__}: {err}); "
                          f"expected {path}") from None
    finally:
        socket.setdefaulttimeout(previous)


@torch.no_grad()
def transcribe(model, waves_16k: list[np.ndarray], max_tokens: int = 200, language: str = "en") -> list[str]:
    """Greedy (temperature 0) transcripts in `language` of 16 kHz waveforms (each up to 30 s)."""
    import whisper
    mels = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.as_tensor(w, dtype=torch.float32)),
                                                    model.dims.n_mels) for w in waves_16k])
    options = whisper.DecodingOptions(language=language, temperature=0.0, without_timestamps=True,
                                      fp16=next(model.parameters()).is_cuda, sample_len=max_tokens)
    return [r.text for r in whisper.decode(model, mels.to(next(model.parameters()).device), options)]


@functools.cache
def _normaliser():
    from whisper.normalizers import EnglishTextNormalizer
    return EnglishTextNormalizer()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) after whisper's English normaliser on both sides (numbers,
    spellings, punctuation: "cost 100 euros" == "cost one hundred euros"). Against an empty
    normalised reference every hypothesis word is an insertion."""
    ref, hyp = _normaliser()(reference).split(), _normaliser()(hypothesis).split()
    if not ref:
        return len(hyp), 0
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions + out.deletions + out.insertions, len(ref)


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Mandarin: (character errors, reference characters) of the Chinese characters of both sides
    (text.normalize_transcript with language zh: punctuation, spaces, Latin letters and digits
    dropped); jiwer's character alignment."""
    from valle_tts.text import normalize_transcript
    ref, hyp = normalize_transcript(reference, "zh"), normalize_transcript(hypothesis, "zh")
    if not ref:
        return len(hyp), 0
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref)


def error_rate(errors: float, ref_words: float) -> float:
    """errors / reference words; with no reference word: 0 if nothing was said, else 1."""
    return errors / ref_words if ref_words else float(errors > 0)


class SpeakerEmbedder:
    """wave (16 kHz) -> speaker embedding; `similarity` is the cosine of two embeddings."""

    def __init__(self, source: str, device, random: bool = False):
        self.device = device
        if random:
            from speechbrain.lobes.features import Fbank
            from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
            torch.manual_seed(0)
            self.features = Fbank(n_mels=80)
            self.model = ECAPA_TDNN(80, lin_neurons=64, channels=[64, 64, 64, 64, 192],
                                    attention_channels=32, se_channels=32).to(device).eval()
            self.classifier = None
        else:
            self.classifier = _load_ecapa(source, device)

    @torch.no_grad()
    def embed(self, wave_16k: np.ndarray) -> torch.Tensor:
        wave = torch.as_tensor(wave_16k, dtype=torch.float32, device=self.device)[None]
        if wave.shape[1] < MIN_EMBED_SAMPLES:  # the ECAPA convolutions need a few dozen frames
            wave = torch.nn.functional.pad(wave, (0, MIN_EMBED_SAMPLES - wave.shape[1]))
        if self.classifier is not None:
            return self.classifier.encode_batch(wave).flatten().cpu()
        return self.model(self.features(wave.cpu()).to(self.device)).flatten().cpu()

    def similarity(self, wave_a: np.ndarray, wave_b: np.ndarray) -> float:
        return float(torch.nn.functional.cosine_similarity(self.embed(wave_a), self.embed(wave_b), dim=0))


def score_rows(rows: list[dict], whisper_model, embedder: SpeakerEmbedder, max_tokens: int,
               language: str = "en") -> None:
    """Fill hyp / errors / ref_words / wer / sim of rows holding `audio_16k` (what whisper hears),
    `text` (its reference), `prompt_16k` (the voice to compare with; None: no similarity) and
    optionally `voice_16k` (the part whose voice is compared, default `audio_16k`). One whisper
    batch: the caller bounds len(rows). Mandarin (language zh): errors and ref_words count characters."""
    hyps = transcribe(whisper_model, [r["audio_16k"] for r in rows], max_tokens, language) if rows else []
    for row, hyp in zip(rows, hyps):
        errors, ref_words = (char_errors if language == "zh" else word_errors)(row["text"], hyp)
        voice = row.get("voice_16k", row["audio_16k"])
        if row["prompt_16k"] is None:
            sim = ""
        else:  # an empty synthesis (the AR stopped at once) has no voice: similarity 0
            sim = embedder.similarity(voice, row["prompt_16k"]) if len(voice) else 0.0
        row.update(hyp=" ".join(hyp.split()), errors=errors, ref_words=ref_words,
                   wer=error_rate(errors, ref_words), sim=sim)


class RowLog:
    """per_utterance.csv, appended a batch of rows at a time as whole lines in one write, flushed and
    fsynced: after kill -9 the file holds whole rows, plus at most one last line cut short, which
    `done` drops (and truncates away) so that its rows are computed again."""

    def __init__(self, path: str | Path, fields: list[str] = ROW_FIELDS):
        self.path, self.fields = Path(path), fields

    def done(self) -> set[tuple[str, str, str]]:
        """(system, mode, id) of the rows on disk."""
        if not self.path.is_file():
            return set()
        with open(self.path, "rb+") as f:
            whole = sum(len(line) for line in f if line.endswith(b"\n"))  # bytes of complete lines
            if whole < f.tell():
                f.truncate(whole)
        return {(r["system"], r["mode"], r["id"]) for r in self.rows()}

    def append(self, rows: list[dict]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, self.fields, extrasaction="ignore", lineterminator="\n")
        if not self.path.is_file() or self.path.stat().st_size == 0:
            writer.writeheader()
        writer.writerows(rows)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def rows(self):
        """The rows on disk, one at a time (values as strings)."""
        if not self.path.is_file():
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)


def summarise(rows) -> list[dict]:
    """Rows (dicts of ROW_FIELDS, values as read from the csv) -> one line per (system, mode) in
    first-seen order: utterances, error_rate (corpus WER, or CER for Mandarin: all errors / all
    reference words or characters), mean similarity
    over the rows that have one, end-token stop rate, the share cut at the length cap (generated
    rows only), the share with a loop, the mean length / expected length, and seconds of synthesis
    / of generated audio."""
    groups: dict[tuple[str, str], dict] = {}
    for row in rows:
        g = groups.setdefault((row["system"], row["mode"]), dict.fromkeys(
            ("utterances", "errors", "ref_words", "sim_sum", "sim_utterances", "stopped", "capped", "loop",
             "length_ratio", "synth_s", "audio_s"), 0))
        g["utterances"] += 1
        g["errors"] += int(row["errors"])
        g["ref_words"] += int(row["ref_words"])
        if row["sim"] != "":
            g["sim_sum"] += float(row["sim"])
            g["sim_utterances"] += 1
        g["capped"] += row["stopped"] == "0"
        for key in ("stopped", "loop", "length_ratio", "synth_s", "audio_s"):
            g[key] += float(row[key] or 0)
    return [{"system": system, "mode": mode, "utterances": g["utterances"],
             "error_rate": error_rate(g["errors"], g["ref_words"]),
             "sim": g["sim_sum"] / g["sim_utterances"] if g["sim_utterances"] else float("nan"),
             "sim_utterances": g["sim_utterances"], "stop_rate": g["stopped"] / g["utterances"],
             "cap_rate": g["capped"] / g["utterances"], "loop_rate": g["loop"] / g["utterances"],
             "length_ratio": g["length_ratio"] / g["utterances"],
             "synth_s": g["synth_s"], "audio_s": g["audio_s"]} for (system, mode), g in groups.items()]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(num_rows: int, batch_rows: int, max_tokens: int, seed: int = 0) -> dict:
    """Score `num_rows` rows of random 4-10 s audio (3 s prompts, 12-word references) with the
    random-weight scorers, `batch_rows` at a time, streamed to a temporary per_utterance.csv and
    summarised from it, as evaluate does. Returns the row count, seconds and peak resident memory
    (after loading the scorers, and at the end)."""
    rng = np.random.default_rng(seed)
    words = "the of and to a in that he was it his for with as had you not be her on at by".split()
    whisper_model = load_whisper("unused", "cpu", random=True)
    embedder = SpeakerEmbedder("unused", "cpu", random=True)
    loaded_mb, start = peak_rss_mb(), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        log = RowLog(Path(tmp) / "per_utterance.csv")
        for first in range(0, num_rows, batch_rows):
            rows = [{"system": "valle", "mode": "cross", "id": f"bench-{n}", "prompt_id": "p", "prompt_s": 3.0,
                     "text": " ".join(rng.choice(words, 12)), "stopped": 1, "frames": 0, "synth_s": 0, "audio_s": 0,
                     "audio_16k": rng.standard_normal(int(rng.uniform(4, 10) * SCORER_RATE)).astype(np.float32),
                     "prompt_16k": rng.standard_normal(3 * SCORER_RATE).astype(np.float32)}
                    for n in range(first, min(first + batch_rows, num_rows))]
            score_rows(rows, whisper_model, embedder, max_tokens)
            log.append(rows)
        totals = summarise(log.rows())
    return {"rows": totals[0]["utterances"], "seconds": time.time() - start, "rss_after_loading_mb": loaded_mb,
            "peak_rss_mb": peak_rss_mb()}


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description="Benchmark of the scoring path: peak resident memory for N rows "
                                                 "scored with the random-weight scorers, as evaluate scores them.")
    parser.add_argument("--bench", type=int, required=True, metavar="ROWS", help="number of rows to score")
    parser.add_argument("--batch-rows", type=int, default=64,
                        help="rows per whisper batch (evaluate: up to 4 x eval.batch_size; default 16 -> 64)")
    parser.add_argument("--max-tokens", type=int, default=200, help="whisper decoding limit (eval.asr_max_tokens)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.bench < 1 or args.batch_rows < 1:
        raise ConfigError("--bench and --batch-rows must be >= 1")
    torch.set_num_threads(args.threads)
    result = bench(args.bench, args.batch_rows, args.max_tokens)
    print(f"{result['rows']} rows in {result['seconds']:.0f} s ({args.batch_rows} per batch, "
          f"{args.threads} thread(s)): peak RSS {result['peak_rss_mb']:.0f} MB "
          f"({result['rss_after_loading_mb']:.0f} MB after loading the scorers)")


if __name__ == "__main__":
    main()


def _load_ecapa(source: str, device):
    from huggingface_hub import try_to_load_from_cache
    from speechbrain.inference.speaker import EncoderClassifier
    cached = try_to_load_from_cache(source, "hyperparams.yaml") if "/" in source and not Path(source).is_dir() \
        else None
    if Path(source).is_dir():
        local = Path(source)
    elif isinstance(cached, str):
        local = Path(cached).parent
    elif _offline():
        from huggingface_hub.constants import HF_HUB_CACHE
        raise ConfigError(f"speaker model {source} is not in the Hugging Face cache ({HF_HUB_CACHE}) and "
                          f"offline mode is set; fetch it on a machine with internet: huggingface-cli "
                          f"download {source}, then copy the cache folder")
    else:
        local = None
    savedir = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "speechbrain" / source.replace("/", "--")
    try:
        return EncoderClassifier.from_hparams(source=str(local or source), savedir=str(savedir),
                                              run_opts={"device": str(device)})
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(f"speaker model {source} could not be loaded ({type(err).__name__}: {err})") from None
