"""Zero-shot synthesis: text + a short acoustic prompt of a voice -> 24 kHz wav.

    # one sentence, cross-utterance style (the prompt is another recording of the voice)
    python -m valle_tts.synthesize runs/valle_tts/base_100h --text "hello there" \\
        --prompt-wav prompt.wav --prompt-text "what the prompt says" --out hello.wav
    # separately trained stages, a batch list (id <TAB> text <TAB> prompt.wav <TAB> prompt text)
    python -m valle_tts.synthesize runs/valle_tts/ar_100h --nar runs/valle_tts/nar_100h \\
        --list sentences.tsv --out-dir synth/ synth.top_k=20

Two prompt modes (as in the paper): cross-utterance - the text the model reads is the prompt's
transcript followed by the target text; continuation - the prompt is the first seconds of the
target utterance itself and the text is that utterance's whole transcript. The AR samples
codebook 1 (temperature, top-k, top-p, optional repetition-aware sampling) until its end token or
synth.max_frames_per_token x (text tokens) frames; the NAR fills codebooks 2..Q greedily.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common.checkpoint import find_checkpoint, load_checkpoint
from common.config import ConfigError, cli_main, load_config
from common.device import pick_device, set_cpu_threads
from valle_tts.codec import Codec, build_codec
from valle_tts.config import Config, SynthConfig
from valle_tts.models.valle import VALLE
from valle_tts.text import TokenTable, normalize_transcript


def load_model(path: str | Path, device, overrides: list[str] = ()) -> tuple[Config, VALLE, TokenTable, Path]:
    """(config of the run + overrides, model with its weights, token table, run folder)."""
    run_dir, ckpt = find_checkpoint(path, "valle_tts")
    cfg = load_config(Config, run_dir / "config.yaml", overrides)
    set_cpu_threads(cfg.run.cpu_threads)
    tokens = TokenTable.load(run_dir / "tokens.txt")  # the training table, whatever data.* now says
    model = VALLE(cfg.model, len(tokens))
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    print(f"loaded {ckpt}")
    return cfg, model.to(device).eval(), tokens, run_dir


@dataclasses.dataclass
class Synthesis:
    wave: np.ndarray          # (samples,) at the codec's sample rate
    codes: torch.Tensor       # (frames, Q) generated codes (prompt excluded)
    stopped: bool             # the AR emitted its end token (False: cut at the length limit)
    seconds: float            # wall time


def prompt_codes_from_wave(codec: Codec, wave: np.ndarray, sample_rate: int, prompt_s: float) -> torch.Tensor:
    """(samples,) at any rate -> codes (P, Q) of its first prompt_s seconds."""
    import torchaudio.functional as AF
    wave_t = torch.as_tensor(wave, dtype=torch.float32)
    if wave_t.dim() > 1:
        wave_t = wave_t.mean(-1)
    if sample_rate != codec.sample_rate:
        wave_t = AF.resample(wave_t, sample_rate, codec.sample_rate)
    wave_t = wave_t[:int(prompt_s * codec.sample_rate)]
    return codec.encode(wave_t[None], torch.tensor([len(wave_t)]))[0].T


@torch.no_grad()
def synthesize(model: VALLE, tokens: TokenTable, codec: Codec, text: str, prompt_codes: torch.Tensor,
               scfg: SynthConfig, generator: torch.Generator | None = None) -> Synthesis:
    """`text`: everything the audio says, prompt included (prompt transcript + target text in
    cross-utterance mode, the whole utterance in continuation mode); prompt_codes (P, Q)."""
    start = time.time()
    device = next(model.parameters()).device
    ids = tokens.encode(normalize_transcript(text))
    if not ids:
        raise ConfigError(f"text {text!r} has no speakable characters after normalisation")
    text_t = torch.tensor(ids, device=device)
    prompt_codes = prompt_codes.to(device)
    max_new = max(1, math.ceil(scfg.max_frames_per_token * len(ids)) - prompt_codes.shape[0])
    codes1, stopped = model.ar.generate(text_t, prompt_codes[:, 0], max_new, scfg.temperature, scfg.top_k,
                                        scfg.top_p, scfg.ras_window, scfg.ras_ratio, generator)
    if len(codes1) == 0:  # stopped at once: nothing to decode
        return Synthesis(np.zeros(0, dtype=np.float32), torch.zeros(0, prompt_codes.shape[1]), stopped,
                         time.time() - start)
    codes = model.nar.generate(text_t, prompt_codes, codes1)
    wave = codec.decode(codes.T[None].cpu())[0].numpy()
    return Synthesis(wave, codes.cpu(), stopped, time.time() - start)


def _read_list(path: Path) -> list[list[str]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ConfigError(f"{path} line {n}: expected 'id<TAB>text<TAB>prompt.wav<TAB>prompt text', "
                              f"got {len(fields)} field(s)")
        rows.append(fields)
    return rows


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder or checkpoint with the AR (and NAR unless --nar)")
    parser.add_argument("--nar", help="run folder or checkpoint with the NAR (default: the same)")
    parser.add_argument("--text")
    parser.add_argument("--prompt-wav")
    parser.add_argument("--prompt-text", default="", help="transcript of the prompt (cross-utterance)")
    parser.add_argument("--out", default="synth.wav")
    parser.add_argument("--list", help="batch mode: id<TAB>text<TAB>prompt.wav<TAB>prompt text per line")
    parser.add_argument("--out-dir", default="synth")
    parser.add_argument("overrides", nargs="*", help="synth.*/codec.*/run.* settings, e.g. synth.top_k=20")
    args = parser.parse_args(argv)
    if not args.list and not (args.text and args.prompt_wav):
        raise ConfigError("give --text and --prompt-wav (and --prompt-text), or --list FILE")
    device = pick_device(load_config(Config, None, [o for o in args.overrides if o.startswith("run.")]).run.device)
    cfg, model, tokens, _ = load_model(args.run, device, args.overrides)
    if args.nar:
        model.nar = load_model(args.nar, device)[1].nar
    codec = build_codec(cfg.codec, device)
    if not cfg.codec.pretrained:
        print("NOTE: codec.pretrained=false: decoding with a RANDOMLY INITIALISED EnCodec (not speech)")
    rows = _read_list(Path(args.list)) if args.list else \
        [[Path(args.out).stem, args.text, args.prompt_wav, args.prompt_text]]
    out_dir = Path(args.out_dir) if args.list else Path(args.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(cfg.synth.seed)
    for utt_id, text, prompt_wav, prompt_text in rows:
        if not Path(prompt_wav).is_file():
            raise ConfigError(f"prompt wav {prompt_wav} not found")
        wave, rate = sf.read(prompt_wav, dtype="float32")
        prompt = prompt_codes_from_wave(codec, wave, rate, cfg.synth.prompt_s)
        result = synthesize(model, tokens, codec, f"{prompt_text} {text}".strip(), prompt, cfg.synth, generator)
        out = out_dir / f"{utt_id}.wav" if args.list else Path(args.out)
        sf.write(out, result.wave, codec.sample_rate)
        print(f"{out}: {len(result.wave) / codec.sample_rate:.2f} s, "
              f"{'stopped on the end token' if result.stopped else 'cut at the length limit'}, "
              f"{result.seconds:.1f} s")


if __name__ == "__main__":
    main()
