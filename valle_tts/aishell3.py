"""AISHELL-3 (openslr 93: 218 Mandarin speakers, about 85 h, 44.1 kHz) as prepare.py reads it.

    <corpus_dir>/spk-info.txt
    <corpus_dir>/{train,test}/content.txt        SSB00050001.wav <TAB> 广 guang3 州 zhou1 ...
    <corpus_dir>/train/label_train-set.txt       (read by lhotse's recipe)
    <corpus_dir>/{train,test}/wav/SSB0005/SSB00050001.wav

lhotse's recipe (prepare_aishell3) makes the parts train (174 speakers) and test (44 other
speakers: the test prompts and targets are of speakers never heard in training). The corpus has no
validation part, so the last data.valid_speakers speakers of train (by id) are held out of it as
the part "dev". Utterance ids start with the 7-character speaker id.
"""
from __future__ import annotations

from pathlib import Path

PARTS = ("train", "dev", "test")
SOURCE_PARTS = ("train", "test")  # the recipe makes both; dev is cut out of train


def source_part(part: str) -> str:
    """The corpus folder a part's audio is in."""
    return "train" if part == "dev" else part


def _content_ids(corpus_dir: Path, source: str) -> list[str]:
    path = corpus_dir / source / "content.txt"
    return [line.split("\t", 1)[0].removesuffix(".wav") for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def dev_speakers(corpus_dir: Path, count: int) -> set[str]:
    """The `count` training speakers held out as the part dev: the last ones by id."""
    return set(sorted({utt_id[:7] for utt_id in _content_ids(corpus_dir, "train")})[-count:])


def _in_part(utt_id: str, part: str, held_out: set[str]) -> bool:
    return part == "test" or (utt_id[:7] in held_out) == (part == "dev")


def split_dev(made_dir: Path, corpus_dir: Path, count: int) -> None:
    """lhotse's train manifests in `made_dir` -> train without the held-out speakers, and dev with them."""
    from lhotse import RecordingSet, SupervisionSet
    held_out = dev_speakers(corpus_dir, count)
    recordings = RecordingSet.from_file(made_dir / "aishell3_recordings_train.jsonl.gz").to_eager()
    supervisions = SupervisionSet.from_file(made_dir / "aishell3_supervisions_train.jsonl.gz").to_eager()
    for part in ("dev", "train"):
        kept = SupervisionSet.from_segments([s for s in supervisions if _in_part(s.id, part, held_out)])
        ids = {s.recording_id for s in kept}
        kept.to_file(made_dir / f"aishell3_supervisions_{part}.jsonl.gz")
        RecordingSet.from_recordings([r for r in recordings if r.id in ids]).to_file(
            made_dir / f"aishell3_recordings_{part}.jsonl.gz")


def corpus_files(corpus_dir: Path, part: str, count: int) -> tuple[dict[str, Path], set[str]]:
    """({utterance id: audio file}, utterance ids with a transcript row) of one part, for the
    check of what the recipe left out."""
    source, held_out = source_part(part), dev_speakers(corpus_dir, count)
    audio = {p.stem: p for p in (corpus_dir / source / "wav").rglob("*.wav") if _in_part(p.stem, part, held_out)}
    rows = {i for i in _content_ids(corpus_dir, source) if _in_part(i, part, held_out)}
    return audio, rows
