"""Transcript normalisation and text tokens: characters by default, espeak-ng phonemes as a switch.

The token table is saved next to the manifests as `tokens.txt` (icefall's "<symbol> <id>" format,
the space written as "▁") so that training, synthesis and evaluation all read the same ids.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

from common.config import ConfigError

PAD, UNK = "<pad>", "<unk>"
SPACE = "▁"  # stands for " " in tokens.txt, whose lines are whitespace-separated
_KEEP = re.compile(r"[^a-z' ,.?!-]")


def normalize_transcript(text: str) -> str:
    """Lower case, ASCII letters/apostrophe/basic punctuation, single spaces:
    "Mr. Smith’s  CAT!" -> "mr. smith's cat!"."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = _KEEP.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()


def espeak_phonemes(text: str, language: str = "en-us") -> list[str]:
    """IPA phonemes from espeak-ng, with SPACE between words."""
    if shutil.which("espeak-ng") is None:
        raise ConfigError("data.text_tokens=phonemes needs espeak-ng, which is not installed; "
                          "install it (apt-get install espeak-ng) or use data.text_tokens=chars")
    out = subprocess.run(["espeak-ng", "-q", "-v", language, "--ipa=3", "--sep=_", text],
                         capture_output=True, text=True, check=True).stdout
    symbols: list[str] = []
    for word in out.split():
        if symbols:
            symbols.append(SPACE)
        symbols.extend(p for p in word.split("_") if p)
    return symbols


def text_to_symbols(text: str, kind: str) -> list[str]:
    """Normalised text -> the symbol sequence the token table indexes."""
    if kind == "chars":
        return [SPACE if c == " " else c for c in text]
    if kind == "phonemes":
        return espeak_phonemes(text)
    raise ConfigError(f"data.text_tokens={kind!r} is not known; use chars or phonemes")


class TokenTable:
    """Symbol <-> id. Id 0 is padding, 1 the unknown symbol."""

    def __init__(self, symbols: list[str], kind: str = "chars"):
        self.kind = kind
        self.symbols = [PAD, UNK] + [s for s in symbols if s not in (PAD, UNK)]
        self.ids = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    @classmethod
    def build(cls, texts, kind: str = "chars") -> TokenTable:
        seen = set()
        for text in texts:
            seen.update(text_to_symbols(text, kind))
        return cls(sorted(seen), kind)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(s, 1) for s in text_to_symbols(text, self.kind)]

    def decode(self, ids) -> str:
        """Inverse of encode for character tokens (phonemes come back space-joined)."""
        symbols = [self.symbols[int(i)] for i in ids if int(i) != 0]
        joiner = "" if self.kind == "chars" else " "
        return joiner.join(" " if s == SPACE else s for s in symbols)

    def save(self, path: str | Path) -> None:
        lines = [f"#kind {self.kind}"] + [f"{s} {i}" for i, s in enumerate(self.symbols)]
        Path(path).write_text("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"token table {path} not found; run the prepare stages first "
                              f"(python -m valle_tts.prepare --config <config>)")
        lines = path.read_text().splitlines()
        if not lines or not lines[0].startswith("#kind "):
            raise ConfigError(f"{path} line 1: expected '#kind chars' or '#kind phonemes'")
        kind = lines[0].split()[1]
        symbols = []
        for n, line in enumerate(lines[1:], 2):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) != len(symbols):
                raise ConfigError(f"{path} line {n}: expected '<symbol> {len(symbols)}', got {line!r}")
            symbols.append(parts[0])
        return cls(symbols[2:], kind)
