"""Flickr8k-layout data: the captions file, the split lists (or the Karpathy split JSON), the
vocabulary, and the datasets that feed training (one item per caption; one per image for
self-critical training) and decoding (one item per image).

The Flickr8k layout (data.root):
    Flickr8k.token.txt         `image.jpg#k<TAB>caption`, five captions per image
    Flicker8k_Dataset/         the images (the official archive spells it "Flicker")
    Flickr_8k.trainImages.txt  one image name per line (6000), likewise dev (1000) and test (1000)
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import re
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from common.config import ConfigError, bounded, resolve_path, text_lines

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = [PAD, START, END, UNK]
SPLITS = ("train", "dev", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class DataConfig:
    root: str = "data/flickr8k"                   # the Flickr8k folder (relative: to the repo root)
    captions_file: str = "Flickr8k.token.txt"     # these five paths are relative to root
    images_dir: str = "Flicker8k_Dataset"
    train_list: str = "Flickr_8k.trainImages.txt"
    dev_list: str = "Flickr_8k.devImages.txt"
    test_list: str = "Flickr_8k.testImages.txt"
    karpathy_json: str = ""        # dataset_flickr8k.json: replaces the captions file and the lists
    min_word_count: int = bounded(5, ge=1)        # rarer training words become <unk>
    max_caption_tokens: int = bounded(50, ge=1)   # longer training captions are skipped (counted); references keep all
    image_size: int = bounded(256, ge=1)          # images are resized to image_size x image_size
    skip_missing_images: bool = False  # false: a listed image missing on disk or not decodable is an error
    preload_images: bool = False   # decode every image once into memory (small sets, the demo)
    num_workers: int = bounded(2, ge=0)
    generate_shapes: int = bounded(0, ge=0)       # >0: write the synthetic shapes set (this many train images) to root


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers; punctuation is dropped ("A dog's ball." -> a dog s ball)."""
    return re.findall(r"[a-z0-9]+", text.lower())


class Vocabulary:
    """Words of the training captions seen at least `min_count` times, after the four specials."""

    def __init__(self, words: list[str]):
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad, self.start, self.end, self.unk = (self.stoi[s] for s in SPECIALS)

    @classmethod
    def build(cls, tokenized_captions, min_count: int) -> Vocabulary:
        counts = collections.Counter(w for caption in tokenized_captions for w in caption)
        # Most frequent first, ties alphabetical: the same ids on every machine and every rerun.
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(SPECIALS + kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        """<start> w1 .. wn <end> as ids."""
        return [self.start] + [self.stoi.get(w, self.unk) for w in tokens] + [self.end]

    def decode(self, ids) -> str:
        """Ids up to the first <end>, specials dropped, joined by spaces."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end:
                break
            if i not in (self.pad, self.start):
                words.append(self.itos[i])
        return " ".join(words)

    def to_json(self) -> list[str]:
        return self.itos


@dataclasses.dataclass
class CaptionCorpus:
    """Image names per split and the raw captions of every image."""
    splits: dict[str, list[str]]           # split -> image names
    captions: dict[str, list[str]]         # image name -> raw captions
    images_dir: Path


def parse_captions_file(path: Path) -> dict[str, list[str]]:
    """`image.jpg#k<TAB>caption` lines -> {image: [captions in k order]}. Blank lines are skipped;
    any other line that does not have that shape, or is not UTF-8, is an error naming the file and line."""
    if not path.is_file():
        raise ConfigError(f"captions file not found: {path} (set data.root / data.captions_file to "
                          f"the Flickr8k folder holding Flickr8k.token.txt)")
    captions: dict[str, dict[int, str]] = collections.defaultdict(dict)
    for line_no, line in text_lines(path):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_, k = key.partition("#")
        if not tab or not hash_ or not k.isdigit() or not name.strip():
            raise ConfigError(f"{path}:{line_no}: malformed line {line[:60]!r}; expected "
                              f"'image.jpg#k<TAB>caption' (k = 0..4)")
        if not caption.strip():
            raise ConfigError(f"{path}:{line_no}: empty caption for {key}; remove the line or "
                              f"write the caption")
        if int(k) in captions[name]:
            raise ConfigError(f"{path}:{line_no}: duplicate caption number {key}")
        captions[name][int(k)] = caption.strip()
    if not captions:
        raise ConfigError(f"captions file {path} holds no captions")
    return {name: [c for _, c in sorted(by_k.items())] for name, by_k in captions.items()}


def read_image_list(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"image list not found: {path} (check data.root and data.*_list)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"image list {path} is empty")
    return names


def read_karpathy_json(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Karpathy's dataset_flickr8k.json -> (splits, captions); his 'val' is our dev."""
    if not path.is_file():
        raise ConfigError(f"Karpathy split file not found: {path} (data.karpathy_json)")
    try:
        images = json.loads(path.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a Karpathy split file (expected {{'images': [...]}}): "
                          f"{err}") from None
    splits = {s: [] for s in SPLITS}
    captions = {}
    for entry in images:
        split = {"val": "dev", "restval": "train"}.get(entry["split"], entry["split"])
        splits[split].append(entry["filename"])
        captions[entry["filename"]] = [s["raw"] for s in entry["sentences"]]
    return splits, captions


def load_corpus(cfg: DataConfig) -> CaptionCorpus:
    """Read captions and splits; check every listed image has captions and exists on disk."""
    root = resolve_path(cfg.root)
    if cfg.generate_shapes:
        from captioning.shapes import write_shapes_dataset
        held_out = max(10, cfg.generate_shapes // 7)
        write_shapes_dataset(root, cfg.generate_shapes, num_dev=held_out, num_test=held_out)
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {root} (set data.root to the Flickr8k folder; see "
                          f"captioning/README.md for how to get it)")
    images_dir = root / cfg.images_dir
    if cfg.karpathy_json:
        splits, captions = read_karpathy_json(root / cfg.karpathy_json)
    else:
        captions = parse_captions_file(root / cfg.captions_file)
        splits = {s: read_image_list(root / getattr(cfg, f"{s}_list")) for s in SPLITS}
    for split, names in splits.items():
        no_caption = [n for n in names if n not in captions]
        if no_caption:
            raise ConfigError(f"{len(no_caption)} {split} images have no caption in the captions file, "
                              f"e.g. {no_caption[0]}; the list and the captions file do not match")
        missing = [n for n in names if not (images_dir / n).is_file()]
        if missing and not cfg.skip_missing_images:
            raise ConfigError(f"{len(missing)} of {len(names)} {split} images are missing from "
                              f"{images_dir}, e.g. {missing[0]}; fix data.root/data.images_dir or set "
                              f"data.skip_missing_images=true to skip them")
        if missing:
            print(f"warning: skipping {len(missing)} missing {split} images: {', '.join(missing[:5])}"
                  f"{' ...' if len(missing) > 5 else ''}")
            missing = set(missing)
            splits[split] = [n for n in names if n not in missing]
        unreadable = undecodable_images(images_dir, splits[split])
        if unreadable and not cfg.skip_missing_images:
            name, why = next(iter(unreadable.items()))
            raise ConfigError(f"{len(unreadable)} of {len(names)} {split} images cannot be decoded, e.g. "
                              f"{images_dir / name} ({why}); replace them (extract Flickr8k_Dataset.zip "
                              f"again) or set data.skip_missing_images=true to skip them")
        if unreadable:
            print(f"warning: skipping {len(unreadable)} unreadable {split} images: "
                  + ", ".join(f"{name} ({why})" for name, why in unreadable.items()))
            splits[split] = [n for n in splits[split] if n not in unreadable]
    return CaptionCorpus(splits, captions, images_dir)


def undecodable_images(images_dir: Path, names: list[str]) -> dict[str, str]:
    """{name: why} for the images that cannot be decoded (truncated, corrupt, not an image), so
    that a bad file stops or is skipped before training rather than deep inside an epoch. Each
    image is decoded once, JPEGs at 1/8 scale (fast, and still reading every byte)."""
    def error(name: str) -> str:
        try:
            with Image.open(images_dir / name) as img:
                img.draft("RGB", (1, 1))
                img.load()
        except Exception as err:  # whatever PIL raises, the image is unusable
            return f"{type(err).__name__}: {err}".replace("\n", " ")
        return ""
    with concurrent.futures.ThreadPoolExecutor() as pool:  # PIL decodes without holding the GIL
        return {name: why for name, why in zip(names, pool.map(error, names)) if why}


def encode_captions(names: list[str], captions: dict[str, list[str]], vocab: Vocabulary,
                    max_tokens: int = 10 ** 6):
    """Every caption of the images `names` as ids -> (captions (N, L) padded, lengths (N,), index
    into `names` (N,)). Captions over `max_tokens` words are skipped and counted."""
    rows, image_index, skipped = [], [], 0
    for i, name in enumerate(names):
        for caption in captions[name]:
            tokens = tokenize(caption)
            if not tokens or len(tokens) > max_tokens:
                skipped += 1
                continue
            rows.append(vocab.encode(tokens))
            image_index.append(i)
    if skipped:
        print(f"skipped {skipped} captions that are empty or longer than {max_tokens} words "
              f"(data.max_caption_tokens)")
    lengths = torch.tensor([len(r) for r in rows])
    padded = torch.full((len(rows), int(lengths.max())), vocab.pad, dtype=torch.long)
    for n, r in enumerate(rows):
        padded[n, :len(r)] = torch.tensor(r)
    return padded, lengths, torch.tensor(image_index)


def build_vocabulary(corpus: CaptionCorpus, min_count: int) -> Vocabulary:
    return Vocabulary.build((tokenize(c) for n in corpus.splits["train"] for c in corpus.captions[n]),
                            min_count)


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) uint8."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, ImageNet mean/std normalised (what torchvision weights expect)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class ImageSource:
    """Images of one split as uint8 tensors, or their cached encoder features (an HDF5 file with
    one row per image name). Decoded images can be kept in memory (`preload`)."""

    def __init__(self, names: list[str], images_dir: Path, size: int, preload: bool = False,
                 features_path: Path | None = None):
        self.names, self.images_dir, self.size = names, images_dir, size
        self.features_path = features_path
        self._h5 = None
        self._rows = None
        self._cache = None
        if features_path is not None:
            with h5py.File(features_path, "r") as h5:
                row_of = {n: i for i, n in enumerate(h5["names"].asstr()[:])}
            self._rows = [row_of[n] for n in names]
        elif preload:
            self._cache = torch.stack([load_image(images_dir / n, size) for n in names])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._rows is not None:
            if self._h5 is None:  # opened lazily: each DataLoader worker gets its own handle
                self._h5 = h5py.File(self.features_path, "r")
            return torch.from_numpy(self._h5["features"][self._rows[i]]).float()
        if self._cache is not None:
            return self._cache[i]
        return load_image(self.images_dir / self.names[i], self.size)

    def __getstate__(self):
        return {**self.__dict__, "_h5": None}


class CaptionDataset(torch.utils.data.Dataset):
    """Training items: (image or features, caption ids (L,), length). One item per caption."""

    def __init__(self, images: ImageSource, captions: torch.Tensor, lengths: torch.Tensor,
                 image_index: torch.Tensor):
        self.images, self.captions, self.lengths, self.image_index = images, captions, lengths, image_index

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        return self.images[int(self.image_index[i])], self.captions[i], self.lengths[i]


class ImageDataset(torch.utils.data.Dataset):
    """Self-critical training items: (image or features, its index in the split). One item per image."""

    def __init__(self, images: ImageSource):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i


def collate_captions(batch):
    """-> images (B, ...), captions (B, Lmax) trimmed to the longest in the batch, lengths (B,)."""
    images, captions, lengths = zip(*batch)
    lengths = torch.stack(lengths)
    return torch.stack(images), torch.stack(captions)[:, :int(lengths.max())], lengths

