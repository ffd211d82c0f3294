"""A tiny multi-speaker "speech-like" corpus in LibriTTS layout, synthesised with numpy.

No TTS engine is needed: each character becomes a short voiced segment whose harmonics (at the
speaker's pitch) are shaped by two formants picked from the character; consonants add a noise
burst; a space is a pause. Every speaker has its own pitch and formant scale (timbre). The result
is not speech, but it has what the pipeline needs: text that determines the sound, and speakers
that differ. Layout (as lhotse's prepare_libritts reads it):

    <root>/<part>/<spk>/<chapter>/<spk>_<chapter>_<utt>_000000.wav (+ .normalized.txt)
    <root>/<part>/<spk>/<chapter>/<spk>_<chapter>.trans.tsv   id <TAB> original <TAB> normalised
    <root>/<part>/<spk>/<chapter>/<spk>_<chapter>.book.tsv    id ... snr

The Mandarin variant (`write_mandarin_corpus`) says two-character words through their pinyin
(tones left out) in AISHELL-3's layout (see aishell3.py), for lhotse's prepare_aishell3.

    python -m valle_tts.synth_corpus data/toy_libritts
    python -m valle_tts.synth_corpus data/toy_aishell3 --mandarin
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ("a bad bed big boat cat dog egg fish go hat ice jam kid lamp man moon no oak pen "
         "red sun tea up van we yes zoo blue green old new fast slow tall warm").split()
CHAR_MS = 70
SPACE_MS = 50
# (speakers, utterances per speaker) of each part of the demo corpus; first speaker id per part
DEMO_PARTS = {"train-clean-100": (4, 8, 100), "dev-clean": (4, 1, 100), "test-clean": (2, 3, 900)}
MANDARIN_WORDS = ("北京 上海 天气 很好 我们 学生 老师 中国 音乐 朋友 今天 明天 喜欢 吃饭 水果 电脑 "
                  "红色 绿色 飞机 火车 医生 工作 周末 公园").split()
# AISHELL-3 has no dev part: prepare holds data.valid_speakers training speakers out as dev
MANDARIN_DEMO_PARTS = {"train": (5, 8, 1), "test": (2, 3, 900)}


def _formants(char: str) -> tuple[float, float]:
    code = ord(char) - ord("a")
    return 300.0 + 60.0 * (code % 9), 900.0 + 110.0 * (code % 13)


def synthesise(text: str, f0_hz: float, formant_scale: float, sample_rate: int,
               rng: np.random.Generator) -> np.ndarray:
    """Mono float32 waveform for `text` (lower-case letters and spaces) at one speaker's voice."""
    pieces = []
    char_len = int(sample_rate * CHAR_MS / 1000)
    ramp = np.minimum(1.0, np.minimum(np.arange(char_len), np.arange(char_len)[::-1]) / (0.005 * sample_rate))
    t = np.arange(char_len) / sample_rate
    for i, char in enumerate(text):
        if not char.isalpha():
            pieces.append(np.zeros(int(sample_rate * SPACE_MS / 1000)))
            continue
        f1, f2 = (f * formant_scale for f in _formants(char))
        pitch = f0_hz * (1.0 - 0.1 * i / max(1, len(text)))  # falling intonation
        harmonics = np.arange(1, int(4000 // pitch) + 1) * pitch
        gains = np.exp(-((harmonics - f1) / 150) ** 2) + 0.6 * np.exp(-((harmonics - f2) / 200) ** 2) + 0.02
        voiced = (gains[:, None] * np.sin(2 * np.pi * harmonics[:, None] * t[None, :])).sum(0)
        segment = voiced / (np.abs(voiced).max() + 1e-9)
        if char not in "aeiou":
            segment = 0.6 * segment + 0.3 * rng.standard_normal(char_len)
        pieces.append(0.5 * segment * ramp)
    silence = np.zeros(int(0.1 * sample_rate))
    return np.concatenate([silence, *pieces, silence]).astype(np.float32)


def write_corpus(root: str | Path, parts: dict = DEMO_PARTS, sample_rate: int = 24000,
                 seed: int = 0, words_per_utt: tuple[int, int] = (2, 3)) -> Path:
    """Write the corpus (skipped when `root/COMPLETE` exists); returns `root`.
    parts: {part: (speakers, utterances per speaker, first speaker id)}."""
    root = Path(root)
    if (root / "COMPLETE").is_file():
        return root
    rng = np.random.default_rng(seed)
    for part, (num_speakers, utts_per_speaker, first_id) in parts.items():
        for s in range(num_speakers):
            speaker, chapter = first_id + s, 1000 + first_id + s
            f0_hz, formant_scale = _voice(speaker)
            folder = root / part / str(speaker) / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            trans, book = [], []
            for u in range(utts_per_speaker):
                utt_id = f"{speaker}_{chapter}_{u:06d}_000000"
                words = rng.choice(WORDS, size=int(rng.integers(words_per_utt[0], words_per_utt[1] + 1)), replace=False)
                text = " ".join(words)
                sf.write(folder / f"{utt_id}.wav", synthesise(text, f0_hz, formant_scale, sample_rate, rng),
                         sample_rate)
                (folder / f"{utt_id}.normalized.txt").write_text(text)
                (folder / f"{utt_id}.original.txt").write_text(text.capitalize() + ".")
                trans.append(f"{utt_id}\t{text.capitalize()}.\t{text}")
                book.append(f"{utt_id}\t{text}\t{text}\t0\t0\t30.0")
            (folder / f"{speaker}_{chapter}.trans.tsv").write_text("\n".join(trans) + "\n")
            (folder / f"{speaker}_{chapter}.book.tsv").write_text("\n".join(book) + "\n")
    (root / "COMPLETE").write_text("synthesised by valle_tts.synth_corpus\n")
    return root


def write_mandarin_corpus(root: str | Path, parts: dict = MANDARIN_DEMO_PARTS, sample_rate: int = 24000,
                          seed: int = 0, words_per_utt: tuple[int, int] = (2, 3)) -> Path:
    """The Mandarin toy corpus in AISHELL-3's layout (skipped when `root/COMPLETE` exists); returns
    `root`. parts: {train | test: (speakers, utterances per speaker, first speaker number)}."""
    from pypinyin import Style, lazy_pinyin
    root = Path(root)
    if (root / "COMPLETE").is_file():
        return root
    rng = np.random.default_rng(seed)
    speaker_rows = ["# speaker	age group	gender	accent"]
    for part, (num_speakers, utts_per_speaker, first_id) in parts.items():
        content, labels = [], ["# utterance|pinyin|characters"]
        for s in range(num_speakers):
            number = first_id + s
            speaker = f"SSB{number:04d}"
            speaker_rows.append(f"{speaker}	B	{'female' if number % 2 else 'male'}	north")
            folder = root / part / "wav" / speaker
            folder.mkdir(parents=True, exist_ok=True)
            for u in range(utts_per_speaker):
                utt_id = f"{speaker}{u + 1:04d}"
                words = rng.choice(MANDARIN_WORDS, size=int(rng.integers(words_per_utt[0], words_per_utt[1] + 1)),
                                   replace=False)
                chars = "".join(words)
                syllables = lazy_pinyin(chars, style=Style.TONE3, neutral_tone_with_five=True)
                sound = " ".join("".join(lazy_pinyin(word)) for word in words)  # one pause per word
                sf.write(folder / f"{utt_id}.wav", synthesise(sound, *_voice(number), sample_rate, rng), sample_rate)
                content.append(f"{utt_id}.wav	" + " ".join(f"{c} {p}" for c, p in zip(chars, syllables)))
                labels.append(f"{utt_id}|{' '.join(syllables)}|{' '.join(chars)}")
        (root / part / "content.txt").write_text("\n".join(content) + "\n", encoding="utf-8")
        if part == "train":  # lhotse's recipe reads the tone labels of train
            (root / part / "label_train-set.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (root / "spk-info.txt").write_text("\n".join(speaker_rows) + "\n")
    (root / "COMPLETE").write_text("synthesised by valle_tts.synth_corpus\n")
    return root


def _voice(speaker: int) -> tuple[float, float]:
    """(pitch in Hz, formant scale) of a speaker number."""
    return 90.0 + 37.0 * ((speaker * 7) % 11), 0.85 + 0.03 * ((speaker * 5) % 11)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mandarin", action="store_true", help="the Mandarin corpus in AISHELL-3's layout")
    args = parser.parse_args()
    print((write_mandarin_corpus if args.mandarin else write_corpus)(args.root, seed=args.seed))
