"""Transcript normalisation and text tokens: characters by default, espeak-ng phonemes as a switch;
for Mandarin, Chinese characters only and pinyin tokens (pypinyin): initials and tone-numbered finals.

The token table is saved next to the manifests as `tokens.txt` (icefall's "<symbol> <id>" format,
the space written as "▁") so that training, synthesis and evaluation all read the same ids.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from decimal import Decimal
from pathlib import Path

from num2words import num2words

from common.config import ConfigError

PAD, UNK = "<pad>", "<unk>"
SPACE = "▁"  # stands for " " in tokens.txt, whose lines are whitespace-separated
CHARS = "abcdefghijklmnopqrstuvwxyz' ,.?!-"  # what normalize_transcript keeps: the character tokens
_NOT_KEPT = re.compile(f"[^{re.escape(CHARS)}]")
# letters that NFKD does not split into an ASCII letter and an accent, symbols read as words, and
# double quotes, which are dropped (other characters outside CHARS become spaces)
_SPELLED = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ø": "o", "Ø": "O",
                          "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
                          "ı": "i", "\u2019": "'", "\u2018": "'", "`": "'", "%": " percent ", "&": " and ",
                          **dict.fromkeys('"\u201c\u201d\u201e\u00ab\u00bb')})
_HANZI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")  # CJK unified ideographs (and extension A)
# the language of each kind of text token: it decides how transcripts are normalised and scored
TOKEN_LANGUAGE = {"chars": "en", "phonemes": "en", "pinyin": "zh"}
_NUMBER = re.compile(r"(\d+(?:,\d{3})*)(\.\d+)?(?:(st|nd|rd|th)\b)?", re.IGNORECASE)


def _number_words(match: re.Match) -> str:
    """1,250 -> one thousand two hundred and fifty; 3.5 -> three point five; 2nd -> second."""
    whole, fraction, ordinal = match.groups()
    if ordinal and not fraction:
        words = num2words(int(whole.replace(",", "")), to="ordinal")
    else:
        words = num2words(Decimal(whole.replace(",", "") + (fraction or "")))
    return f" {words.replace(',', '')} "


def _spelled_out(text: str) -> str:
    """Accents split off and dropped (café -> cafe), letters without an ASCII form transliterated
    (straße -> strasse), numbers as English words; characters with no spelling are left as they are."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _NUMBER.sub(_number_words, text.translate(_SPELLED))


def normalize_transcript(text: str, language: str = "en") -> str:
    """English: lower case, numbers as English words, accents and letters transliterated to ASCII, only the
    characters of CHARS kept, single spaces: "Mr. Smith’s  2 CATS!" -> "mr. smith's two cats!".
    What cannot be spelled (北京, $) is dropped: `lost_characters` names it.
    Mandarin (language="zh"): the Chinese characters only, in order (full-width forms folded first;
    punctuation, spaces, Latin letters and digits dropped): "广州，女大学生！" -> "广州女大学生"."""
    if language == "zh":
        return "".join(_HANZI.findall(unicodedata.normalize("NFKC", text)))
    text = re.sub(r"\s+", " ", _NOT_KEPT.sub(" ", _spelled_out(text).lower())).strip()
    return re.sub(r" ([,.?!])", r"\1", text)  # "number two ." -> "number two."


def lost_characters(text: str, language: str = "en") -> str:
    """The letters, digits and symbols of `text` that normalize_transcript drops because they have
    no spelling in CHARS, each once, in order: "The café in 北京 cost $5" -> "北京$" (punctuation and
    spacing are not content and are not listed). Mandarin: those that are not Chinese characters
    ("3 个 GPU" -> "3GPU"; pinyin has no reading for them)."""
    if language == "zh":
        text = unicodedata.normalize("NFKC", text)
        return "".join(dict.fromkeys(c for c in text if unicodedata.category(c)[0] in "LNS" and not _HANZI.match(c)))
    lost = (c for c in _spelled_out(text)
            if unicodedata.category(c)[0] in "LNS" and not (c.isascii() and c.isalnum()))
    return "".join(dict.fromkeys(lost))


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


def pinyin_symbols(text: str) -> list[str]:
    """Chinese characters -> per character its pinyin initial (when it has one; y and w count as
    initials) and its final with the tone number (neutral tone 5), in context (pypinyin's phrase
    dictionary picks the reading of polyphones): "绿色的" -> [l, v4, s, e4, d, e5]."""
    from pypinyin import Style, lazy_pinyin
    initials = lazy_pinyin(text, style=Style.INITIALS, strict=False)
    finals = lazy_pinyin(text, style=Style.FINALS_TONE3, strict=False, neutral_tone_with_five=True)
    return [s for initial, final in zip(initials, finals) for s in (initial, final) if s]


def text_to_symbols(text: str, kind: str) -> list[str]:
    """Normalised text -> the symbol sequence the token table indexes."""
    if kind == "chars":
        return [SPACE if c == " " else c for c in text]
    if kind == "phonemes":
        return espeak_phonemes(text)
    if kind == "pinyin":
        return pinyin_symbols(text)
    raise ConfigError(f"data.text_tokens={kind!r} is not known; use chars, phonemes or pinyin")


class TokenTable:
    """Symbol <-> id. Id 0 is padding, 1 the unknown symbol."""

    def __init__(self, symbols: list[str], kind: str = "chars"):
        self.kind = kind
        self.language = TOKEN_LANGUAGE.get(kind, "en")  # of the text it reads
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
            raise ConfigError(f"{path} line 1: expected '#kind chars', '#kind phonemes' or '#kind pinyin'")
        kind = lines[0].split()[1]
        symbols = []
        for n, line in enumerate(lines[1:], 2):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) != len(symbols):
                raise ConfigError(f"{path} line {n}: expected '<symbol> {len(symbols)}', got {line!r}")
            symbols.append(parts[0])
        return cls(symbols[2:], kind)
