"""Word-level corpora: reading, vocabulary, and batching of one token stream.

A corpus is a folder with train.txt, valid.txt and test.txt (or Penn Treebank's ptb.train.txt,
ptb.valid.txt, ptb.test.txt): whitespace-separated tokens, one sentence per line. Every line gets
`<eos>` appended and the lines of a file are joined into one stream of token ids.

The vocabulary comes from train.txt (`vocab_from: train`, words unseen in training become `<unk>`
and the out-of-vocabulary rate is reported) or from all three files (`vocab_from: all`, the course
convention, so numbers compare with past students'). Index 0 is always `<eos>`: the stream is read
as if a sentence had just ended before its first token, so the first token is predicted from `<eos>`.
"""
from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import torch

from common.config import ConfigError, resolve_path, text_lines

EOS, UNK = "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")


class Vocab:
    """Word <-> id. Id 0 is `<eos>`, id 1 is `<unk>`; the rest by decreasing training frequency."""

    def __init__(self, words: list[str]):
        self.words = [EOS, UNK] + [w for w in words if w not in (EOS, UNK)]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.eos, self.unk = 0, 1

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, counts: collections.Counter, max_size: int = 0, min_count: int = 1) -> Vocab:
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        vocab = cls(ranked)
        if max_size:
            vocab = cls(vocab.words[2:max_size])
        return vocab

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.index.get(t, self.unk) for t in tokens]

    def decode(self, ids) -> list[str]:
        return [self.words[int(i)] for i in ids]


def split_path(folder: Path, split: str) -> Path:
    """`train.txt`, or Penn Treebank's `ptb.train.txt` naming."""
    for name in (f"{split}.txt", f"ptb.{split}.txt"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"data file {folder / f'{split}.txt'} not found (nor ptb.{split}.txt); "
                      f"set data.dir to a folder with train.txt valid.txt test.txt (see lm/README.md)")


def read_tokens(path: Path, empty_lines: str = "skip") -> list[str]:
    """All tokens of a file with `<eos>` after every line. Empty lines carry no sentence: "skip"
    drops them (their number is printed); "eos" gives each an `<eos>`, the convention of the published
    WikiText-2/-103 perplexities (a different token count, so the two do not compare). Bytes that are
    not UTF-8 are an error naming the line."""
    tokens, empty = [], 0
    for _, line in text_lines(path):
        words = line.split()
        if not words:
            empty += 1
            if empty_lines == "skip":
                continue
        tokens.extend(words)
        tokens.append(EOS)
    if not tokens:
        raise ConfigError(f"data file {path} has no tokens; it must hold one sentence per line")
    if empty:
        print(f"{path.name}: {empty} empty line(s) " + ("skipped" if empty_lines == "skip" else "read as <eos>"))
    return tokens


@dataclasses.dataclass
class Corpus:
    vocab: Vocab
    train: torch.Tensor          # (tokens,) int64 ids, one stream per split
    valid: torch.Tensor
    test: torch.Tensor
    oov_rate: dict               # split -> fraction of tokens mapped to <unk> (unseen words)

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {len(getattr(self, s)):,}" for s in SPLITS)
        oov = ", ".join(f"{s} {100 * r:.2f}%" for s, r in self.oov_rate.items())
        return f"vocabulary {len(self.vocab):,} words; tokens: {sizes}; OOV rate: {oov}"


def load_corpus(folder: str | Path, vocab_from: str = "train", max_vocab: int = 0,
                min_count: int = 1, empty_lines: str = "skip") -> Corpus:
    """Read the three splits of `folder` and map them to ids (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"data folder {folder} not found; set data.dir to a folder with "
                          f"train.txt valid.txt test.txt (see lm/README.md for PTB and the course corpus)")
    tokens = {s: read_tokens(split_path(folder, s), empty_lines) for s in SPLITS}
    counted = SPLITS if vocab_from == "all" else ("train",)
    counts = collections.Counter(t for s in counted for t in tokens[s])
    vocab = Vocab.build(counts, max_vocab, min_count)
    streams, oov = {}, {}
    for split in SPLITS:
        ids = vocab.encode(tokens[split])
        # OOV: tokens mapped to <unk> that were not literally "<unk>" in the text
        mapped = sum(1 for t, i in zip(tokens[split], ids) if i == vocab.unk and t != UNK)
        oov[split] = mapped / len(ids)
        streams[split] = torch.tensor(ids, dtype=torch.long)
    return Corpus(vocab, streams["train"], streams["valid"], streams["test"], oov)


def batchify(stream: torch.Tensor, rows: int) -> torch.Tensor:
    """(tokens,) -> (rows, tokens // rows): `rows` contiguous slices of the stream side by side,
    so row b of one batch continues row b of the previous one (the hidden state carries over).
    The tail that does not fill a row is dropped (training only; evaluation pads instead)."""
    per_row = len(stream) // rows
    if per_row < 2:
        raise ConfigError(f"training stream of {len(stream)} tokens is too short for "
                          f"train.batch_size={rows}; lower the batch size")
    return stream[:per_row * rows].view(rows, per_row)


def bptt_segments(total_len: int, bptt: int, variable: bool = False, seed: int = 0,
                  epoch: int = 0) -> list[tuple[int, int]]:
    """(start, length) of the training segments of one epoch over a batchified stream of
    `total_len` columns (inputs start..start+length, targets shifted by one).

    `variable`: AWD-LSTM's variable-length BPTT (length bptt with p=0.95, else bptt/2, then
    N(length, 5)), drawn from a generator seeded by (seed, epoch) only, so that a resumed run sees
    exactly the same segments."""
    segments, start = [], 0
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    while start < total_len - 1:
        length = bptt
        if variable:
            base = bptt if torch.rand((), generator=g).item() < 0.95 else bptt / 2
            length = max(5, int(base + 5 * torch.randn((), generator=g).item()))
        length = min(length, total_len - 1 - start)
        segments.append((start, length))
        start += length
    return segments


def eval_chunks(stream: torch.Tensor, rows: int, chunk_len: int, eos_id: int = 0):
    """Every token of `stream` as a target exactly once, in contiguous chunks.

    Yields (inputs, targets, mask), each (rows, <=chunk_len). Inputs are the stream shifted right
    by one with `<eos>` first (the token before a file is a sentence end). The stream is cut into
    `rows` contiguous rows of equal length (the last row padded; mask is False on padding); rows
    are read in parallel and a model's state carries from chunk to chunk along each row.
    With rows=1 every token sees the whole preceding stream, as in one pass over the text."""
    inputs = torch.cat([stream.new_tensor([eos_id]), stream[:-1]])
    per_row = -(-len(stream) // rows)
    pad = per_row * rows - len(stream)
    mask = torch.ones(per_row * rows, dtype=torch.bool)
    if pad:
        inputs = torch.cat([inputs, inputs.new_full((pad,), eos_id)])
        stream = torch.cat([stream, stream.new_full((pad,), eos_id)])
        mask[-pad:] = False
    inputs, targets, mask = (t.view(rows, per_row) for t in (inputs, stream, mask))
    for start in range(0, per_row, chunk_len):
        end = start + chunk_len
        yield inputs[:, start:end], targets[:, start:end], mask[:, start:end]


def corpus_from_config(cfg) -> tuple[Corpus, Path]:
    """The `data:` section -> (corpus, resolved folder); writes the synthetic corpus first when
    `data.generate: markov` and the folder does not hold it yet."""
    from lm.synthetic import write_corpus  # here: lm.synthetic imports this module
    folder = resolve_path(cfg.dir)
    if cfg.generate == "markov" and not (folder / "train.txt").is_file():
        print(f"writing a synthetic Markov-chain corpus to {folder}")
        write_corpus(folder, cfg.generate_train_tokens)
    corpus = load_corpus(folder, cfg.vocab_from, cfg.max_vocab, cfg.min_count, cfg.empty_lines)
    print(f"{folder}: {corpus.describe()}")
    return corpus, folder
