"""Frame embeddings from raw audio and video, written in the course HDF5 layout, for users who have
the TAU Urban Audio-Visual Scenes 2021 clips rather than the course's OpenL3 files.

    python -m av_scene.extract_features --config av_scene/configs/extract.yaml \\
        dataset_root=/data/TAU-urban-audio-visual-scenes-2021-development out_root=data/av_scene_resnet

Audio: log-mel spectrogram windows (window_s long, every hop_s) -> a torchvision image CNN
(ImageNet weights; ImageNet CNNs on log-mel images are a strong scene-classification baseline).
Video: frames at frames_per_s -> the same kind of CNN. Both give 512-d per frame with resnet18, the
OpenL3 size, so every config works unchanged on the result (set data.root=<out_root>).

Reads audio with soundfile; video with the `ffmpeg` program (on PATH), or from a folder of images
per clip (<video dir>/<stem>/*.jpg|png, sorted) when one exists. Writes
    <out_root>/{audio,video}_features_data/<split>.hdf5   keys <class_idx>/<modality>/<stem>
    <out_root>/{audio,video}_features_data/global_mean_std.npz   (over the first split)
    <out_root>/evaluation_setup/<fold csv>                       (copied)
Clips already in the output are skipped, so an interrupted extraction continues where it stopped.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import soundfile
import torch
import torchvision

from av_scene.data import read_fold_csv
from common.config import ConfigError, bounded, cli_main, parse_args, resolve_path
from common.device import pick_device

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclasses.dataclass
class ExtractConfig:
    dataset_root: str = "data/TAU-urban-audio-visual-scenes-2021-development"
    out_root: str = "data/av_scene_resnet18"
    folds: list[str] = dataclasses.field(default_factory=lambda: [
        "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv"])
    split_names: list[str] = dataclasses.field(default_factory=lambda: ["train", "test"])
    backbone: str = "resnet18"        # any torchvision classification model (the head is removed)
    pretrained: bool = True           # ImageNet weights through torchvision (downloaded once)
    sample_rate: int = bounded(48000, ge=1)  # audio is resampled to this
    window_s: float = bounded(1.0, gt=0)  # log-mel window per audio frame (OpenL3 uses 1 s)
    hop_s: float = bounded(0.1, gt=0)  # one audio frame every hop_s (OpenL3 in the course: 0.1 s)
    n_mels: int = bounded(128, ge=1)
    frames_per_s: float = bounded(5.0, gt=0)  # video frames per second
    image_size: int = bounded(224, ge=1)  # video frames and log-mel images are resized to this
    batch_size: int = bounded(64, ge=1)
    device: str = "auto"


def build_backbone(name: str, pretrained: bool) -> torch.nn.Module:
    """A torchvision image model with its classifier replaced by identity: (B, 3, H, W) -> (B, D)."""
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    except ValueError:
        raise ConfigError(f"backbone={name!r} is not a torchvision model; try resnet18 or "
                          f"efficientnet_b0") from None
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as err:  # no network, a proxy, a truncated download
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise ConfigError(f"could not load the pretrained {name} weights {file} ({type(err).__name__}); "
                          f"download {weights.url} into {file.parent}, or set pretrained=false") from None
    for attribute in ("fc", "classifier", "head", "heads"):
        if hasattr(model, attribute):
            setattr(model, attribute, torch.nn.Identity())
            break
    return model.eval()


@torch.no_grad()
def embed_images(model, images: torch.Tensor, image_size: int, batch_size: int, device) -> np.ndarray:
    """(frames, 3, H, W) in [0, 1] -> (frames, D) float32."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].float()
        batch = torch.nn.functional.interpolate(batch, size=(image_size, image_size), mode="bilinear",
                                                align_corners=False)
        batch = (batch - IMAGENET_MEAN) / IMAGENET_STD
        outputs.append(model(batch.to(device)).float().cpu())
    return torch.cat(outputs).numpy()


def log_mel_windows(path: Path, cfg: ExtractConfig) -> torch.Tensor:
    """Audio file -> (windows, 3, n_mels, 64) log-mel images scaled to [0, 1], one every hop_s."""
    import torchaudio
    if not path.is_file():
        raise ConfigError(f"audio file not found: {path} (check dataset_root)")
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(audio.mean(axis=1))
    if rate != cfg.sample_rate:
        waveform = torchaudio.functional.resample(waveform, rate, cfg.sample_rate)
    window = int(cfg.window_s * cfg.sample_rate)
    mel_hop = max(1, window // 64)  # 64 spectrogram frames per window
    waveform = torch.nn.functional.pad(waveform, (0, max(0, window - len(waveform))))
    mel = torchaudio.transforms.MelSpectrogram(cfg.sample_rate, n_fft=max(2 * mel_hop, 512), hop_length=mel_hop,
                                               n_mels=cfg.n_mels)(waveform)
    log_mel = torchaudio.functional.amplitude_to_DB(mel, 10.0, 1e-10, 0.0, top_db=80.0)
    log_mel = (log_mel - log_mel.max() + 80.0).clamp_min(0.0) / 80.0  # [0, 1], loudest bin = 1
    starts = range(0, len(waveform) - window + 1, int(cfg.hop_s * cfg.sample_rate))
    images = torch.stack([log_mel[:, s // mel_hop: s // mel_hop + 64] for s in starts])
    return images.unsqueeze(1).expand(-1, 3, -1, -1)


def video_frames(path: Path, cfg: ExtractConfig) -> torch.Tensor:
    """Video -> (frames, 3, H, W) in [0, 1], from <stem>/ image folder or the file through ffmpeg."""
    from PIL import Image
    folder = path.with_suffix("")
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not files:
            raise ConfigError(f"frame folder {folder} holds no .jpg/.png images")
        images = [np.asarray(Image.open(f).convert("RGB").resize((cfg.image_size, cfg.image_size))) for f in files]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    if not path.is_file():
        raise ConfigError(f"video not found: {path} (nor a frame folder {folder}); check dataset_root")
    if shutil.which("ffmpeg") is None:
        raise ConfigError("decoding video needs the ffmpeg program on PATH (module load ffmpeg, conda install "
                          "ffmpeg), or frames extracted to <video>/<stem>/*.jpg")
    size = cfg.image_size
    command = ["ffmpeg", "-loglevel", "error", "-i", str(path), "-vf", f"fps={cfg.frames_per_s},scale={size}:{size}",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size, 3)
    return torch.from_numpy(frames.copy()).permute(0, 3, 1, 2).float() / 255.0


def running_stats(h5_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over every frame of every clip in an HDF5 file."""
    total = total_sq = None
    count = 0

    def visit(name, obj):
        nonlocal total, total_sq, count
        if isinstance(obj, h5py.Dataset):
            frames = obj[()].astype(np.float64)
            total = frames.sum(0) if total is None else total + frames.sum(0)
            total_sq = (frames ** 2).sum(0) if total_sq is None else total_sq + (frames ** 2).sum(0)
            count += len(frames)
    with h5py.File(h5_path, "r") as f:
        f.visititems(visit)
    mean = total / count
    return mean.astype(np.float32), np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12)).astype(np.float32)


@cli_main
def main(argv=None):
    cfg, _ = parse_args(ExtractConfig, argv, description=__doc__.split("\n")[0])
    if len(cfg.folds) != len(cfg.split_names):
        raise ConfigError(f"folds ({len(cfg.folds)}) and split_names ({len(cfg.split_names)}) must pair up")
    dataset_root, out_root = resolve_path(cfg.dataset_root), resolve_path(cfg.out_root)
    device = pick_device(cfg.device)
    model = build_backbone(cfg.backbone, cfg.pretrained).to(device)
    (out_root / "evaluation_setup").mkdir(parents=True, exist_ok=True)
    for fold, split in zip(cfg.folds, cfg.split_names):
        fold_path = dataset_root / fold
        clips = read_fold_csv(fold_path)
        shutil.copy(fold_path, out_root / "evaluation_setup" / Path(fold).name)
        rows = {c.stem: c for c in clips}
        files = {}
        for modality in ("audio", "video"):
            folder = out_root / f"{modality}_features_data"
            folder.mkdir(exist_ok=True)
            files[modality] = h5py.File(folder / f"{split}.hdf5", "a")
        try:
            for number, stem in enumerate(rows, start=1):
                label = rows[stem].label
                for modality, loader, suffix in (("audio", log_mel_windows, ".wav"), ("video", video_frames, ".mp4")):
                    key = f"{label}/{modality}/{stem}"
                    if key in files[modality]:
                        continue
                    images = loader(dataset_root / modality / f"{stem}{suffix}", cfg)
                    files[modality].create_dataset(key, data=embed_images(model, images, cfg.image_size,
                                                                          cfg.batch_size, device))
                if number % 100 == 0 or number == len(rows):
                    print(f"{split}: {number}/{len(rows)} clips", flush=True)
        finally:
            for handle in files.values():
                handle.close()
    for modality in ("audio", "video"):
        folder = out_root / f"{modality}_features_data"
        mean, std = running_stats(folder / f"{cfg.split_names[0]}.hdf5")
        np.savez(folder / "global_mean_std.npz", global_mean=mean, global_std=std)
    h5_list = lambda m: "[" + ",".join(f"{m}_features_data/{s}.hdf5" for s in cfg.split_names) + "]"
    print(f"done; train on it with data.root={out_root} data.audio_h5={h5_list('audio')} "
          f"data.video_h5={h5_list('video')}")


if __name__ == "__main__":
    main()
