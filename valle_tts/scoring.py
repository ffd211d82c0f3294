"""The two scorers of the evaluation: WER with openai-whisper (+ its English text normaliser and
jiwer) and speaker similarity with speechbrain's ECAPA-TDNN (cosine of embeddings).

Every pretrained loader looks in its cache first; offline (HF_HUB_OFFLINE=1 or VALLE_OFFLINE=1)
and not cached, it stops at once with one line naming the model, the cache path and how to fetch
it. `random=True` builds small randomly initialised models of the same classes (tests, demo).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import jiwer
import numpy as np
import torch

from common.config import ConfigError

SCORER_RATE = 16000  # both whisper and the ECAPA model take 16 kHz audio
MIN_EMBED_SAMPLES = SCORER_RATE // 4  # shorter audio is zero-padded to 0.25 s before embedding


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0") for v in ("HF_HUB_OFFLINE", "VALLE_OFFLINE"))


def whisper_cache_path(name: str) -> Path:
    import whisper
    if name not in whisper._MODELS:
        raise ConfigError(f"eval.asr_model={name!r} is not a whisper model; use one of "
                          f"{', '.join(whisper.available_models())}")
    root = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    return root / os.path.basename(whisper._MODELS[name])


def load_whisper(name: str, device, random: bool = False):
    import whisper
    from whisper.model import ModelDimensions, Whisper
    if random:  # English-only vocabulary (51864), one tiny layer each side
        torch.manual_seed(0)
        dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                               n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1)
        return Whisper(dims).to(device).eval()
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
def transcribe(model, waves_16k: list[np.ndarray], max_tokens: int = 200) -> list[str]:
    """Greedy (temperature 0) English transcripts of 16 kHz waveforms (each up to 30 s)."""
    import whisper
    mels = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.as_tensor(w, dtype=torch.float32)),
                                                    model.dims.n_mels) for w in waves_16k])
    options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=True,
                                      fp16=next(model.parameters()).is_cuda, sample_len=max_tokens)
    return [r.text for r in whisper.decode(model, mels.to(next(model.parameters()).device), options)]


def word_error_rate(references: list[str], hypotheses: list[str]) -> tuple[float, list[float]]:
    """(corpus WER over all words, per-utterance WERs) after whisper's English normaliser on both sides.
    An empty normalised reference gives a per-utterance WER of 0 for an empty hypothesis, else 1."""
    from whisper.normalizers import EnglishTextNormalizer
    normalise = EnglishTextNormalizer()
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    per_utt = [jiwer.wer(r, h) if r.strip() else float(bool(h.strip())) for r, h in zip(refs, hyps)]
    scored = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not scored:
        return 0.0, per_utt
    output = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
    errors = output.substitutions + output.deletions + output.insertions
    return errors / (output.hits + output.substitutions + output.deletions), per_utt


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
