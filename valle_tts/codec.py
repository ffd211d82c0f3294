"""Audio tokenisers behind one small interface, so that another codec is one more class here.

    codec = build_codec(cfg.codec, device)
    codes = codec.encode(waves, num_samples)   # (batch, codebooks, frames) int64
    waves = codec.decode(codes)                # (batch, samples) float32 at codec.sample_rate

EnCodec 24 kHz at 6 kbps gives 8 codebooks of 1024 entries at 75 frames per second.

codec.name=vocos keeps EnCodec's tokens and replaces its decoder by Vocos (Siuzdak 2023,
charactr/vocos-encodec-24khz): a Fourier-based vocoder trained to turn EnCodec's codes into audio,
with fewer of EnCodec's artefacts at the same bitrate. The codes - what VALL-E models and what
prepare.py stores - are EnCodec's either way (`codec_tokens`), so one prepared folder and one
trained model serve both decoders, and the codec is a switch of synthesis and evaluation.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import socket
from pathlib import Path

import torch

from common.config import ConfigError, bounded

ENCODEC_24KHZ_FILE = "encodec_24khz-d7cc33bc.th"
RANDOM_CODEC_SEED = 1234
VOCOS_REPO = "charactr/vocos-encodec-24khz"
VOCOS_BANDWIDTHS = [1.5, 3.0, 6.0, 12.0]  # Vocos's decoder is conditioned on the index of one of these
# the tokens each codec reads and writes: codes stored by one are readable by the others of its kind
CODEC_TOKENS = {"encodec": "encodec", "vocos": "encodec"}


def codec_tokens(name: str) -> str:
    """The kind of codes codec `name` reads and writes (what codec.json records)."""
    if name not in CODEC_TOKENS:
        raise ConfigError(f"codec.name={name!r} is not known; use {' or '.join(CODEC_TOKENS)}")
    return CODEC_TOKENS[name]


@dataclasses.dataclass
class CodecConfig:
    name: str = "encodec"            # encodec (24 kHz) | vocos (EnCodec's tokens, Vocos's decoder)
    bandwidth_kbps: float = bounded(6.0, gt=0)  # 1.5 / 3 / 6 / 12 / 24 -> 2 / 4 / 8 / 16 / 32 codebooks
    # false: a randomly initialised EnCodec of the same architecture (demo and tests only: its codes
    # carry no learned acoustics, so synthesised audio is noise-like)
    pretrained: bool = True
    batch_seconds: float = bounded(60.0, gt=0)  # audio per encoder batch when extracting codes


class Codec:
    """What the rest of the project needs from a neural codec."""
    sample_rate: int
    frame_rate_hz: float
    num_codebooks: int
    codebook_size: int

    def encode(self, waves: torch.Tensor, num_samples: torch.Tensor) -> list[torch.Tensor]:
        """(batch, samples) float, valid lengths (batch,) -> per item (codebooks, frames) int64."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(batch, codebooks, frames) -> (batch, samples) float32."""
        raise NotImplementedError


def encodec_checkpoint_path() -> Path:
    """Where encodec's own loader (torch.hub) caches the 24 kHz weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ENCODEC_24KHZ_FILE


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0") for v in ("HF_HUB_OFFLINE", "VALLE_OFFLINE"))


class EncodecCodec(Codec):
    sample_rate = 24000

    def __init__(self, pretrained: bool, bandwidth_kbps: float = 6.0, device: str | torch.device = "cpu"):
        from encodec import EncodecModel
        if pretrained:
            path = encodec_checkpoint_path()
            fetch = (f"fetch it on a machine with internet: python -c \"from encodec import EncodecModel; "
                     f"EncodecModel.encodec_model_24khz()\" and copy {path.name} to {path.parent}/")
            if not path.is_file() and _offline():
                raise ConfigError(f"EnCodec weights not in the cache ({path}) and offline mode is set; {fetch}")
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(15)  # a dead network fails in seconds, not minutes
            try:
                model = EncodecModel.encodec_model_24khz(pretrained=True)
            except (OSError, RuntimeError) as err:  # URLError is an OSError
                raise ConfigError(f"EnCodec weights could not be loaded ({type(err).__name__}); "
                                  f"expected {path}; {fetch}") from None
            finally:
                socket.setdefaulttimeout(previous)
        else:
            # Fixed seed, global RNG untouched: every process (prepare, train, synthesize, evaluate)
            # gets the same random codec, so the codes it stores and the audio it decodes agree.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_CODEC_SEED)
                model = EncodecModel.encodec_model_24khz(pretrained=False)
            _init_random_codebooks(model)
        if bandwidth_kbps not in model.target_bandwidths:
            raise ConfigError(f"codec.bandwidth_kbps={bandwidth_kbps} is not one of {model.target_bandwidths}")
        model.set_target_bandwidth(bandwidth_kbps)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.frame_rate_hz = float(model.frame_rate)
        self.hop_samples = self.sample_rate // model.frame_rate
        self.num_codebooks = model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, bandwidth_kbps)
        self.codebook_size = model.quantizer.bins

    @torch.no_grad()
    def encode(self, waves: torch.Tensor, num_samples: torch.Tensor) -> list[torch.Tensor]:
        # The 24 kHz model is causal, so right padding does not change the codes of valid frames.
        frames = self.model.encode(waves.to(self.device).unsqueeze(1))
        codes = frames[0][0].cpu()
        return [c[:, :math.ceil(int(n) / self.hop_samples)] for c, n in zip(codes, num_samples)]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode([(codes.to(self.device), None)]).squeeze(1).float().cpu()


@torch.no_grad()
def _init_random_codebooks(model, seed: int = RANDOM_CODEC_SEED) -> None:
    """An untrained EnCodec's quantiser is empty (k-means initialises it on the first training batch),
    so every code would be 0. Fill each residual codebook with Gaussian vectors matching the statistics
    of the residual it quantises on a fixed probe signal: the codes then vary with the audio."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(6000) / 24000
    probe = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) + 0.05 * torch.randn(6000, generator=gen)
                         for f in (110.0, 220.0, 440.0, 880.0)]).unsqueeze(1)
    residual = model.encoder(probe).transpose(1, 2).reshape(-1, model.quantizer.dimension)
    for layer in model.quantizer.vq.layers:
        book = layer._codebook
        mean, std = residual.mean(0), residual.std(0) + 1e-5
        embed = mean + std * torch.randn(book.embed.shape, generator=gen)
        book.embed.copy_(embed)
        book.embed_avg.copy_(embed)
        book.inited.fill_(1)
        residual = residual - book.decode(book.encode(residual))


def _vocos_files() -> dict[str, Path]:
    """{config.yaml, pytorch_model.bin: path} of the pretrained Vocos, from the Hugging Face cache
    (fetched when online)."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    files = {}
    for name in ("pytorch_model.bin", "config.yaml"):
        cached = try_to_load_from_cache(VOCOS_REPO, name)
        if isinstance(cached, str):
            files[name] = Path(cached)
            continue
        fetch = (f"fetch them on a machine with internet: huggingface-cli download {VOCOS_REPO}, then copy "
                 f"the cache folder")
        if _offline():
            raise ConfigError(f"Vocos weights ({name} of {VOCOS_REPO}) are not in the Hugging Face cache "
                              f"({constants.HF_HUB_CACHE}) and offline mode is set; {fetch}")
        try:
            files[name] = Path(hf_hub_download(VOCOS_REPO, name))
        except (OSError, ValueError) as err:  # the hub's errors (HTTP, not found) are OSErrors
            raise ConfigError(f"Vocos weights ({name} of {VOCOS_REPO}) could not be fetched "
                              f"({type(err).__name__}); {fetch}") from None
    return files


class VocosCodec(Codec):
    """EnCodec's encoder and tokens, Vocos's decoder: the codebooks' vectors of each frame summed
    (as EnCodec's own decoder starts) -> Vocos backbone (ConvNeXt, conditioned on the bandwidth) ->
    inverse STFT, one hop (320 samples) per frame."""

    def __init__(self, pretrained: bool, bandwidth_kbps: float = 6.0, device: str | torch.device = "cpu"):
        import yaml
        from vocos.heads import ISTFTHead
        from vocos.models import VocosBackbone
        if bandwidth_kbps not in VOCOS_BANDWIDTHS:
            raise ConfigError(f"codec.bandwidth_kbps={bandwidth_kbps}: Vocos is trained for "
                              f"{', '.join(map(str, VOCOS_BANDWIDTHS))} kbps; use one of them or codec.name=encodec")
        if pretrained:
            files = _vocos_files()
            config = yaml.safe_load(files["config.yaml"].read_text())
            backbone = VocosBackbone(**config["backbone"]["init_args"])
            head = ISTFTHead(**config["head"]["init_args"])
            state = torch.load(files["pytorch_model.bin"], map_location="cpu", weights_only=True)
            for prefix, module in (("backbone.", backbone), ("head.", head)):
                module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            # the codebook vectors Vocos was trained with (EnCodec's, stacked; kept in case they were tuned)
            trained_books = state.get("feature_extractor.codebook_weights")
        else:  # the published architecture, randomly initialised with a fixed seed (demo and tests only)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_CODEC_SEED)
                backbone = VocosBackbone(input_channels=128, dim=384, intermediate_dim=1152, num_layers=8,
                                         adanorm_num_embeddings=len(VOCOS_BANDWIDTHS))
                head = ISTFTHead(dim=384, n_fft=1280, hop_length=320, padding="same")
            trained_books = None
        self.encodec = EncodecCodec(pretrained, bandwidth_kbps, device)
        self.device = self.encodec.device
        self.backbone, self.head = backbone.to(self.device).eval(), head.to(self.device).eval()
        self.sample_rate, self.frame_rate_hz = self.encodec.sample_rate, self.encodec.frame_rate_hz
        self.num_codebooks, self.codebook_size = self.encodec.num_codebooks, self.encodec.codebook_size
        if trained_books is None:
            layers = self.encodec.model.quantizer.vq.layers[:self.num_codebooks]
            self.codebooks = torch.stack([layer.codebook for layer in layers])  # (Q, K, 128)
        else:
            books = trained_books.view(-1, self.codebook_size, trained_books.shape[-1])[:self.num_codebooks]
            self.codebooks = books.to(self.device)
        self.bandwidth_id = torch.tensor([VOCOS_BANDWIDTHS.index(bandwidth_kbps)], device=self.device)

    def encode(self, waves: torch.Tensor, num_samples: torch.Tensor) -> list[torch.Tensor]:
        return self.encodec.encode(waves, num_samples)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        codes = codes.to(self.device)
        features = sum(self.codebooks[q][codes[:, q]] for q in range(codes.shape[1]))  # (B, T, 128)
        hidden = self.backbone(features.transpose(1, 2), bandwidth_id=self.bandwidth_id)
        return self.head(hidden).float().cpu()


def build_codec(cfg: CodecConfig, device: str | torch.device = "cpu") -> Codec:
    codec_tokens(cfg.name)  # an unknown name: one line
    return _cached_codec(cfg.name, cfg.pretrained, cfg.bandwidth_kbps, str(device))


@functools.cache  # one codec per process: building (and the random init) is slow on CPU
def _cached_codec(name: str, pretrained: bool, bandwidth_kbps: float, device: str) -> Codec:
    if name == "vocos":
        return VocosCodec(pretrained, bandwidth_kbps, device)
    return EncodecCodec(pretrained, bandwidth_kbps, device)
