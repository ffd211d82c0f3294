"""Training data: cuts with stored EnCodec codes (see prepare.py), batched by total duration with
lhotse's DynamicBucketingSampler, collated into padded tensors. Training never reads a waveform;
`mono_audio` is how preparation and evaluation read one.

Exact resume: the sampler's order depends on (seed, epoch) only (lhotse seeds its shuffling RNG
with seed + epoch), so a resumed run rebuilds the epoch's batch sequence and skips the batches the
checkpoint says were consumed (`skip_batches`). Only cut metadata is touched while skipping.
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from common.config import ConfigError, bounded
from valle_tts.text import TokenTable


@dataclasses.dataclass
class DataConfig:
    # librispeech | libritts (English) | aishell3 (Mandarin; parts train, dev, test): lhotse recipe
    # names; a corpus without a recipe here is refused
    corpus: Literal["librispeech", "libritts", "aishell3"] = "librispeech"
    corpus_dir: str = "data/LibriSpeech"      # holds train-clean-100/, dev-clean/, ... (AISHELL-3: train/, test/)
    # the course's sizes (README "The real data"): 100 h = [train-clean-100]; 360 h = + train-clean-360
    # with train_hours 360; 960 h = + train-other-500
    train_parts: list[str] = dataclasses.field(default_factory=lambda: ["train-clean-100"])
    # 0: all of train_parts; otherwise whole speakers, part by part, up to this many hours
    train_hours: float = bounded(0.0, ge=0)
    valid_parts: list[str] = dataclasses.field(default_factory=lambda: ["dev-clean"])
    test_parts: list[str] = dataclasses.field(default_factory=lambda: ["test-clean"])
    manifest_dir: str = "data/valle/librispeech"  # manifests, tokens.txt and codes are written here
    download: bool = False                    # fetch missing parts from openslr (needs internet)
    synthesise_toy_corpus: bool = False       # write the numpy toy corpus to corpus_dir (demo, tests)
    min_duration_s: float = bounded(1.0, ge=0)
    max_duration_s: float = bounded(20.0, gt=0)
    # chars | phonemes (needs espeak-ng): English; pinyin (initials and tone-numbered finals): Mandarin
    text_tokens: Literal["chars", "phonemes", "pinyin"] = "chars"
    valid_speakers: int = bounded(4, ge=1)    # aishell3: training speakers held out as the part dev
    num_jobs: int = bounded(1, ge=1)          # lhotse recipe workers
    max_batch_s: float = bounded(120.0, gt=0)  # seconds of audio per batch (DynamicBucketingSampler)
    num_buckets: int = bounded(10, ge=2)      # lhotse's bucketing needs at least 2
    num_workers: int = bounded(2, ge=0)       # DataLoader workers reading codes


def first_hours(parts: list, hours: float) -> list:
    """The cuts of `parts` (one list of cuts per corpus part) up to `hours` of audio: part by part,
    whole speakers in the order of their ids (as text), stopping at the first speaker that would pass
    the budget. 0 keeps everything. The selection only grows with the budget, so a smaller set is
    always inside a larger one."""
    if not hours:
        return [c for part in parts for c in part]
    chosen, total_s = [], 0.0
    for part in parts:
        by_speaker: dict[str, list] = {}
        for cut in part:
            by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut)
        for speaker in sorted(by_speaker):
            speaker_s = sum(c.duration for c in by_speaker[speaker])
            if total_s + speaker_s > hours * 3600:
                return chosen
            chosen += by_speaker[speaker]
            total_s += speaker_s
    return chosen


def load_cuts(manifest_dir: Path, parts: list[str], max_hours: float = 0.0):
    """The prepared cuts (with codes) of `parts`; max_hours > 0 keeps `first_hours` of them."""
    from lhotse import CutSet
    if not parts:
        raise ConfigError("an empty list of corpus parts (data.train_parts / valid_parts / test_parts); "
                          "name at least one, e.g. [dev-clean]")
    files = [manifest_dir / f"cuts_codes_{p}.jsonl.gz" for p in parts]
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{f} not found; run the prepare stages (python -m valle_tts.prepare "
                              f"--config <config>) or check data.manifest_dir")
    if max_hours:
        chosen = first_hours([CutSet.from_file(f) for f in files], max_hours)
        print(f"data.train_hours={max_hours:g}: {len(chosen)} cuts, {sum(c.duration for c in chosen) / 3600:.1f} h "
              f"of {', '.join(parts)}")
        return CutSet.from_cuts(chosen)
    return CutSet.from_files([str(f) for f in files]) if len(files) > 1 else CutSet.from_file(files[0])


def mono_audio(cut, sample_rate: int) -> np.ndarray:
    """The cut's samples at `sample_rate`, (samples,) float32; a recording with several channels is
    averaged into one (lhotse's own cut of a stereo file reads its first channel only)."""
    cut = cut.resample(sample_rate)
    return cut.recording.load_audio(offset=cut.start, duration=cut.duration).mean(axis=0)


def collate(texts: list[torch.Tensor], codes: list[torch.Tensor]) -> dict:
    """Pad a batch. texts: (text_len,) each; codes: (frames, codebooks) each ->
    text (B, T_text) 0-padded, text_lens (B,), codes (B, T_audio, Q) 0-padded, audio_lens (B,)."""
    return {"text": torch.nn.utils.rnn.pad_sequence(texts, batch_first=True),
            "text_lens": torch.tensor([len(t) for t in texts]),
            "codes": torch.nn.utils.rnn.pad_sequence(codes, batch_first=True),
            "audio_lens": torch.tensor([len(c) for c in codes])}


class CodesDataset(torch.utils.data.Dataset):
    """CutSet (one batch from the sampler) -> padded tensors; codes come from lhotse storage."""

    def __init__(self, tokens: TokenTable):
        self.tokens = tokens

    def __getitem__(self, cuts) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        texts = [torch.tensor(self.tokens.encode(c.supervisions[0].text)) for c in cuts]
        codes = [torch.from_numpy(c.load_codes().astype("int64")) for c in cuts]
        batch = collate(texts, codes)
        batch["cut_ids"] = [c.id for c in cuts]
        return batch


def make_sampler(cuts, cfg: DataConfig, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
    from lhotse.dataset import DynamicBucketingSampler
    return DynamicBucketingSampler(cuts, max_duration=cfg.max_batch_s, num_buckets=cfg.num_buckets,
                                   shuffle=shuffle, drop_last=False, seed=seed, rank=rank,
                                   world_size=world_size)


class SkippingSampler:
    """The lhotse sampler's batches for one epoch, minus the first `skip` (consumed before a resume)."""

    def __init__(self, sampler, epoch: int, skip: int):
        self.sampler, self.epoch, self.skip = sampler, epoch, skip

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        return itertools.islice(iter(self.sampler), self.skip, None)


def make_loader(cuts_sampler, dataset, epoch: int, skip_batches: int, num_workers: int):
    # Own generator: the DataLoader must not draw from the global RNG (exact resume).
    return torch.utils.data.DataLoader(dataset, sampler=SkippingSampler(cuts_sampler, epoch, skip_batches),
                                       batch_size=None, num_workers=num_workers,
                                       persistent_workers=False, generator=torch.Generator())
