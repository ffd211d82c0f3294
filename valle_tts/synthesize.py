"""Zero-shot synthesis: text + an acoustic prompt of a voice (a short recording and exactly what it
says) -> 24 kHz wav.

    # one sentence; the prompt is a short recording of the voice (about 3 s) and its transcript
    python -m valle_tts.synthesize runs/valle_tts/base_100h --text "hello there" \\
        --prompt-wav prompt.wav --prompt-text "what the prompt says" --out hello.wav
    # separately trained stages, a list (id <TAB> text <TAB> prompt.wav <TAB> prompt text);
    # key=value overrides may come before or after the options
    python -m valle_tts.synthesize runs/valle_tts/ar_100h --nar runs/valle_tts/nar_100h \\
        --list sentences.tsv --out-dir synth/ synth.top_k=20

The model continues its prompt: it reads the prompt's transcript followed by the text to say, and
its audio sequence starts with the prompt's codes, so the prompt audio and the prompt text must be
the same speech. The whole prompt wav is therefore encoded, never cut (the paper's prompts are
3 s; evaluate.py picks whole test utterances of at most synth.prompt_s). The AR samples codebook 1
(temperature, top-k, top-p; the stability switches of stability.py: repetition-aware sampling,
stop-token boosting, a cap at a multiple of the expected length) until its end token or
synth.max_frames_per_token x (text tokens) frames; the NAR fills codebooks 2..Q greedily. Up to
synth.batch_size utterances are decoded together (`synthesize_batch`).
"""
from __future__ import annotations

import argparse
import dataclasses
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
from valle_tts.stability import expected_new_frames, new_frame_limit, run_frames_per_token
from valle_tts.text import TokenTable, normalize_transcript


def load_model(path: str | Path, device,
               overrides: list[str] = ()) -> tuple[Config, VALLE, TokenTable, Path, Path]:
    """(config of the run + overrides, model with its weights, token table, run folder, checkpoint file)."""
    run_dir, ckpt = find_checkpoint(path, "valle_tts")
    cfg = load_config(Config, run_dir / "config.yaml", overrides)
    set_cpu_threads(cfg.run.cpu_threads)
    tokens = TokenTable.load(run_dir / "tokens.txt")  # the training table, whatever data.* now says
    model = VALLE(cfg.model, len(tokens))
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    print(f"loaded {ckpt}")
    return cfg, model.to(device).eval(), tokens, run_dir, ckpt


def attach_nar(model: VALLE, tokens: TokenTable, nar_path: str | Path, device) -> Path:
    """Use the NAR of another run (`--nar`, trained separately); returns its checkpoint file. Its
    text embedding indexes that run's token table, which must therefore be the AR run's."""
    _, nar_model, nar_tokens, nar_dir, ckpt = load_model(nar_path, device)
    if (nar_tokens.kind, nar_tokens.symbols) != (tokens.kind, tokens.symbols):
        raise ConfigError(f"--nar {nar_path}: its token table ({nar_dir / 'tokens.txt'}, {len(nar_tokens)} "
                          f"{nar_tokens.kind}) differs from the AR run's ({len(tokens)} {tokens.kind}); train both "
                          f"stages on the same prepared data")
    model.nar = nar_model.nar
    return ckpt


@dataclasses.dataclass
class Synthesis:
    wave: np.ndarray          # (samples,) at the codec's sample rate
    codes: torch.Tensor       # (frames, Q) generated codes (prompt excluded)
    stopped: bool             # the AR emitted its end token (False: cut at the length limit)
    expected_frames: float    # the frames expected from the text (stability.expected_new_frames)
    seconds: float            # wall time: its batch's time shared equally among the batch's utterances


def prompt_codes_from_wave(codec: Codec, wave: np.ndarray, sample_rate: int) -> torch.Tensor:
    """(samples,) or (samples, channels) at any rate -> codes (P, Q) of all of it (its transcript
    covers all of it; channels are averaged)."""
    import torchaudio.functional as AF
    wave_t = torch.as_tensor(wave, dtype=torch.float32)
    if wave_t.dim() > 1:
        wave_t = wave_t.mean(-1)
    if sample_rate != codec.sample_rate:
        wave_t = AF.resample(wave_t, sample_rate, codec.sample_rate)
    return codec.encode(wave_t[None], torch.tensor([len(wave_t)]))[0].T


def model_text(prompt_text: str, text: str, names: tuple[str, str] = ("--prompt-text", "--text")) -> str:
    """What the model reads for a prompt from another recording: the prompt's transcript, then the
    text to say. Each must keep a letter or digit after normalisation (English or Mandarin: this
    check comes before the run, and so its language, is known); `names` say where each came from
    in the one-line error."""
    for name, value, wanted in ((names[0], prompt_text, "the transcript of the prompt wav (the model reads it "
                                                        "before the text, in step with the prompt audio)"),
                                (names[1], text, "the text to say")):
        kept = normalize_transcript(value) + normalize_transcript(value, "zh")
        if not any(char.isalnum() for char in kept):  # punctuation alone says nothing
            raise ConfigError(f"{name} {value!r} has no speakable characters after normalisation; give {wanted}")
    return f"{prompt_text} {text}"


@torch.no_grad()
def synthesize_batch(model: VALLE, tokens: TokenTable, codec: Codec, requests: list[tuple[str, torch.Tensor]],
                     scfg: SynthConfig, generator: torch.Generator | None = None, *,
                     frames_per_token: float) -> list[Synthesis]:
    """requests: (text, prompt codes (P, Q)) per utterance, `text` being everything the audio says,
    prompt included (`model_text` for a prompt from another recording; in continuation mode the
    whole utterance's transcript). scfg.batch_size utterances at a time: the AR decodes them
    together with its KV cache, the NAR fills their codebooks 2..Q in one batch. frames_per_token:
    the training data's (stability.run_frames_per_token), for the expected lengths."""
    device = next(model.parameters()).device
    results = []
    for first in range(0, len(requests), scfg.batch_size):
        start = time.time()
        batch = requests[first:first + scfg.batch_size]
        texts, prompts = [], []
        for text, prompt_codes in batch:
            ids = tokens.encode(normalize_transcript(text, tokens.language))
            if not ids:
                raise ConfigError(f"text {text!r} has no speakable characters after normalisation")
            texts.append(torch.tensor(ids, device=device))
            prompts.append(prompt_codes.to(device))
        expected = [expected_new_frames(frames_per_token, len(t), len(p)) for t, p in zip(texts, prompts)]
        max_new = [new_frame_limit(scfg, len(t), len(p), e) for t, p, e in zip(texts, prompts, expected)]
        generated = model.ar.generate_batch(texts, [p[:, 0] for p in prompts], max_new, scfg.temperature,
                                            scfg.top_k, scfg.top_p, scfg.ras_window, scfg.ras_ratio, generator,
                                            expected, scfg.eos_boost)
        spoken = [i for i, (codes1, _) in enumerate(generated) if len(codes1)]  # stopped at once: nothing to say
        codes = dict(zip(spoken, model.nar.generate_batch([texts[i] for i in spoken], [prompts[i] for i in spoken],
                                                          [generated[i][0] for i in spoken]))) if spoken else {}
        waves = {i: codec.decode(c.T[None].cpu())[0].numpy() for i, c in codes.items()}
        seconds = (time.time() - start) / len(batch)
        for i, (_, stopped) in enumerate(generated):
            results.append(Synthesis(waves.get(i, np.zeros(0, dtype=np.float32)),
                                     codes[i].cpu() if i in codes else torch.zeros(0, prompts[i].shape[1]),
                                     stopped, expected[i], seconds))
    return results


def _read_list(path: Path) -> list[tuple[str, str, str]]:
    """(id, text the model reads, prompt wav) per line of id<TAB>text<TAB>prompt.wav<TAB>prompt text."""
    if not path.is_file():
        raise ConfigError(f"list file {path} not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ConfigError(f"{path} line {n}: expected 'id<TAB>text<TAB>prompt.wav<TAB>prompt text', "
                              f"got {len(fields)} field(s)")
        utt_id, text, prompt_wav, prompt_text = fields
        rows.append((utt_id, model_text(prompt_text, text, (f"{path} line {n}: the prompt text",
                                                            f"{path} line {n}: the text")), prompt_wav))
    return rows


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder or checkpoint with the AR (and NAR unless --nar)")
    parser.add_argument("--nar", help="run folder or checkpoint with the NAR (default: the same)")
    parser.add_argument("--text")
    parser.add_argument("--prompt-wav", help="a short recording of the voice (all of it is used)")
    parser.add_argument("--prompt-text", default="", help="exactly what the prompt wav says")
    parser.add_argument("--out", default="synth.wav")
    parser.add_argument("--list", help="batch mode: id<TAB>text<TAB>prompt.wav<TAB>prompt text per line")
    parser.add_argument("--out-dir", default="synth")
    parser.add_argument("overrides", nargs="*", help="synth.*/codec.*/run.* settings, e.g. synth.top_k=20")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    if args.list:
        rows = _read_list(Path(args.list))
    elif args.text is None or args.prompt_wav is None:
        raise ConfigError("give --text, --prompt-wav and --prompt-text, or --list FILE")
    else:
        rows = [(Path(args.out).stem, model_text(args.prompt_text, args.text), args.prompt_wav)]
    for _, _, prompt_wav in rows:
        if not Path(prompt_wav).is_file():
            raise ConfigError(f"prompt wav {prompt_wav} not found")
    device = pick_device(load_config(Config, None, [o for o in args.overrides if o.startswith("run.")]).run.device)
    cfg, model, tokens, run_dir, _ = load_model(args.run, device, args.overrides)
    if args.nar:
        attach_nar(model, tokens, args.nar, device)
    codec = build_codec(cfg.codec, device)
    if not cfg.codec.pretrained:
        print("NOTE: codec.pretrained=false: decoding with a RANDOMLY INITIALISED EnCodec (not speech)")
    out_dir = Path(args.out_dir) if args.list else Path(args.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(cfg.synth.seed)
    frames_per_token = run_frames_per_token(run_dir, cfg, tokens)
    for first in range(0, len(rows), cfg.synth.batch_size):  # a long list: one batch in memory at a time
        batch = rows[first:first + cfg.synth.batch_size]
        prompts = [prompt_codes_from_wave(codec, *sf.read(prompt_wav, dtype="float32")) for _, _, prompt_wav in batch]
        results = synthesize_batch(model, tokens, codec, [(text, p) for (_, text, _), p in zip(batch, prompts)],
                                   cfg.synth, generator, frames_per_token=frames_per_token)
        for (utt_id, _, _), prompt, result in zip(batch, prompts, results):
            out = out_dir / f"{utt_id}.wav" if args.list else Path(args.out)
            sf.write(out, result.wave, codec.sample_rate)
            print(f"{out}: {len(result.wave) / codec.sample_rate:.2f} s "
                  f"({len(result.codes) / result.expected_frames:.2f} x the expected length) after a "
                  f"{len(prompt) / codec.frame_rate_hz:.2f} s prompt, "
                  f"{'stopped on the end token' if result.stopped else 'cut at the length limit'}, "
                  f"{result.seconds:.1f} s")

if __name__ == "__main__":
    main()
