"""VALL-E (Wang et al. 2023): an autoregressive (AR) Transformer for the first EnCodec codebook
and a non-autoregressive (NAR) Transformer for codebooks 2..Q.

AR  input  [text ; BOS c1_1 .. c1_T]  ->  predicts  [c1_1 .. c1_T EOS] at the audio positions.
    Audio attends causally (to all text and to earlier audio); text attends to text only,
    bidirectionally (or causally: model.text_causal). The prompt is simply the start of the audio.
NAR input  [text ; sum of codebook embeddings]  ->  predicts codebook j (1-based 2..Q) of the
    target frames. Prompt frames sum all Q codebooks, target frames sum codebooks 1..j-1.
    Full attention; the stage j enters through adaptive layer norm (scale and shift from a stage
    embedding) in every block, as in the paper; model.nar_stage=add adds it to the input instead.

Shapes: B batch, T_text text tokens, T audio frames, Q codebooks, D model width.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.config import bounded


@dataclasses.dataclass
class ModelConfig:
    d_model: int = bounded(256, ge=1)
    num_layers: int = bounded(6, ge=1)
    num_heads: int = bounded(4, ge=1)
    ff_mult: int = bounded(4, ge=1)
    dropout: float = bounded(0.1, ge=0, lt=1)
    text_causal: bool = False       # AR: text tokens attend causally instead of bidirectionally
    nar_stage: str = "adaln"        # adaln (paper) | add (stage embedding added to the input)
    codebook_size: int = 1024       # set from the codec
    num_codebooks: int = 8          # set from the codec


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    """(length, dim) sinusoidal position table."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm whose scale and shift are predicted from a condition vector (the NAR stage)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.to_scale_shift = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(cond).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class KVCache:
    """Keys and values of the positions seen so far, for one block, in buffers allocated once for
    `capacity` positions: appending one position per step copies only that position."""

    def __init__(self, capacity: int):
        self.capacity, self.length = capacity, 0
        self.k = self.v = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, heads, L, head_dim) of L new positions -> keys and values of all positions so far."""
        if self.k is None:
            self.k = k.new_empty(*k.shape[:2], self.capacity, k.shape[3])
            self.v = v.new_empty(*v.shape[:2], self.capacity, v.shape[3])
        end = self.length + k.shape[2]
        self.k[:, :, self.length:end], self.v[:, :, self.length:end] = k, v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def keep_rows(self, index: torch.Tensor) -> None:
        self.k, self.v = self.k[index], self.v[index]


class Block(nn.Module):
    """Pre-norm Transformer block; `adaptive` swaps both LayerNorms for AdaptiveLayerNorm."""

    def __init__(self, cfg: ModelConfig, adaptive: bool = False):
        super().__init__()
        d = cfg.d_model
        self.num_heads, self.dropout, self.adaptive = cfg.num_heads, cfg.dropout, adaptive
        make_norm = (lambda: AdaptiveLayerNorm(d)) if adaptive else (lambda: nn.LayerNorm(d))
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def _norm(self, norm, x, cond):
        return norm(x, cond) if self.adaptive else norm(x)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None, cond: torch.Tensor | None = None,
                cache: KVCache | None = None):
        """x (B, L, D); allowed (B, 1, L, L_keys) bool, True where a query may attend to a key (None:
        every key). `cache` (generation): keys/values of earlier positions, extended in place."""
        B, L, D = x.shape
        q, k, v = (t.transpose(1, 2) for t in
                   self.qkv(self._norm(self.norm1, x, cond)).view(B, L, 3, self.num_heads, -1).unbind(2))
        if cache is not None:
            k, v = cache.append(k, v)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.mlp(self._norm(self.norm2, x, cond)))


def lengths_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) -> (B, max_len) bool, True at valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class ARModel(nn.Module):
    """Codebook-1 language model. Audio vocabulary: codes 0..K-1, EOS = K, BOS = K + 1."""

    def __init__(self, cfg: ModelConfig, num_text_tokens: int):
        super().__init__()
        self.cfg = cfg
        self.eos, self.bos = cfg.codebook_size, cfg.codebook_size + 1
        self.text_embed = nn.Embedding(num_text_tokens, cfg.d_model, padding_idx=0)
        self.audio_embed = nn.Embedding(cfg.codebook_size + 2, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.codebook_size + 1)  # codes + EOS

    def attention_mask(self, text_lens: torch.Tensor, T_text: int, audio_lens: torch.Tensor, T_audio: int):
        """(B, 1, L, L) bool, L = T_text + T_audio: text -> valid text (all, or earlier if
        text_causal); audio -> valid text and audio at the same or an earlier position."""
        L = T_text + T_audio
        device = text_lens.device
        causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
        structure = causal.clone()
        if not self.cfg.text_causal:
            structure[:T_text, :T_text] = True
        structure[:T_text, T_text:] = False
        key_valid = torch.cat([lengths_mask(text_lens, T_text), lengths_mask(audio_lens, T_audio)], dim=1)
        return (structure[None] & key_valid[:, None, :]).unsqueeze(1)

    def forward(self, text: torch.Tensor, text_lens: torch.Tensor, audio_in: torch.Tensor,
                audio_in_lens: torch.Tensor) -> torch.Tensor:
        """text (B, T_text); audio_in (B, T) = [BOS, c1 ...] -> logits (B, T, K + 1)."""
        T_text, T = text.shape[1], audio_in.shape[1]
        d = self.cfg.d_model
        x = torch.cat([self.text_embed(text) + sinusoids(T_text, d, text.device),
                       self.audio_embed(audio_in) + sinusoids(T, d, text.device)], dim=1)
        allowed = self.attention_mask(text_lens, T_text, audio_in_lens, T)
        for block in self.blocks:
            x = block(x, allowed)
        return self.head(self.norm(x[:, T_text:]))

    def inputs_and_targets(self, codes1: torch.Tensor, audio_lens: torch.Tensor):
        """codes1 (B, T) -> audio_in (B, T+1) [BOS c1..cT], targets (B, T+1) [c1..cT EOS] with
        -100 past the end, and the input lengths (B,) = audio_lens + 1."""
        B = codes1.shape[0]
        audio_in = torch.cat([torch.full((B, 1), self.bos, device=codes1.device), codes1], dim=1)
        targets = torch.cat([codes1, torch.full((B, 1), -100, device=codes1.device)], dim=1)
        targets[torch.arange(B), audio_lens] = self.eos
        targets[~lengths_mask(audio_lens + 1, targets.shape[1])] = -100
        return audio_in, targets, audio_lens + 1

    @torch.no_grad()
    def generate(self, text: torch.Tensor, prompt_codes1: torch.Tensor, max_new: int,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, ras_window: int = 0,
                 ras_ratio: float = 0.5, generator: torch.Generator | None = None) -> tuple[torch.Tensor, bool]:
        """One utterance: text (T_text,) = everything the audio says, prompt_codes1 (P,) ->
        (new codebook-1 codes (N,), whether it stopped on EOS). At most `max_new` new frames.
        The other arguments as in generate_batch."""
        return self.generate_batch([text], [prompt_codes1], max_new, temperature, top_k, top_p, ras_window,
                                   ras_ratio, generator)[0]

    @torch.no_grad()
    def generate_batch(self, texts: list[torch.Tensor], prompts: list[torch.Tensor], max_new: list[int] | int,
                       temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, ras_window: int = 0,
                       ras_ratio: float = 0.5, generator: torch.Generator | None = None,
                       expected_new: list[float] | None = None,
                       eos_boost: float = 0.0) -> list[tuple[torch.Tensor, bool]]:
        """B utterances at once: texts[i] (T_text_i,) = everything utterance i says, prompts[i] (P_i,)
        its prompt's codebook-1 codes -> per utterance (new codes (N_i,), whether it stopped on EOS),
        at most max_new[i] (or max_new) new frames. Under greedy decoding each row equals decoding it
        alone. ras_window > 0: repetition-aware sampling (VALL-E 2) - a token that already fills more
        than ras_ratio of the row's last ras_window new tokens is redrawn from the full distribution.
        eos_boost > 0 (stop-token boosting; needs expected_new, each row's expected new frames): once
        a row has n > expected frames, its end-token logit gets + eos_boost * (n / expected - 1)."""
        B = len(texts)
        limits = [max_new] * B if isinstance(max_new, int) else list(max_new)
        if not len(prompts) == len(limits) == B:
            raise ValueError(f"{B} texts, {len(prompts)} prompts and {len(limits)} limits: one of each per utterance")
        if eos_boost and (expected_new is None or len(expected_new) != B):
            raise ValueError("eos_boost needs expected_new: one expected length per utterance")
        if min(len(t) for t in texts) < 1 or min(limits) < 1:
            raise ValueError("generation needs at least one text token and max_new >= 1 per utterance")
        device, d = texts[0].device, self.cfg.d_model
        # The prefix [text ; BOS prompt] of all rows in one pass: text padded to the longest text and
        # audio to the longest prompt, so every row keeps its own positions and the training mask.
        # Then one position per step: keys and values of earlier positions are kept (`caches`).
        text_lens = torch.tensor([len(t) for t in texts], device=device)
        audio_lens = torch.tensor([len(p) + 1 for p in prompts], device=device)
        text = nn.utils.rnn.pad_sequence(texts, batch_first=True)  # 0: the padding id
        audio_in = nn.utils.rnn.pad_sequence([F.pad(p, (1, 0), value=self.bos) for p in prompts],
                                             batch_first=True, padding_value=self.bos)
        T_text, T = text.shape[1], audio_in.shape[1]
        positions = sinusoids(max(T_text, T + max(limits)), d, device)
        x = torch.cat([self.text_embed(text) + positions[:T_text], self.audio_embed(audio_in) + positions[:T]],
                      dim=1)
        key_valid = torch.cat([lengths_mask(text_lens, T_text), lengths_mask(audio_lens, T)], dim=1)
        caches = [KVCache(T_text + T + max(limits)) for _ in self.blocks]
        last = self._cached_pass(x, self.attention_mask(text_lens, T_text, audio_lens, T), caches)[
            torch.arange(B, device=device), T_text + audio_lens - 1]  # each row's last real position
        rows = list(range(B))  # the utterance of each row still decoding
        new: list[list[int]] = [[] for _ in range(B)]
        stopped = [False] * B
        for step in range(max(limits)):
            logits = self.head(self.norm(last))
            if eos_boost:
                overrun = torch.tensor([len(new[row]) / expected_new[row] - 1 for row in rows], device=device)
                logits = logits.float()
                logits[:, self.eos] += eos_boost * overrun.clamp(min=0)
            tokens = sample_tokens(logits, temperature, top_k, top_p, generator).tolist()
            keep = []  # rows that go on
            for j, row in enumerate(rows):
                recent = new[row][-ras_window:] if ras_window else []
                if recent and recent.count(tokens[j]) > ras_ratio * ras_window:
                    tokens[j] = int(sample_tokens(logits[j:j + 1], max(temperature, 1.0), 0, 1.0, generator)[0])
                if tokens[j] == self.eos:
                    stopped[row] = True
                    continue
                new[row].append(tokens[j])
                if len(new[row]) < limits[row]:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(rows):  # finished rows leave the batch and the cache
                index = torch.tensor(keep, device=device)
                for cache in caches:
                    cache.keep_rows(index)
                key_valid, audio_lens = key_valid[index], audio_lens[index]
                rows = [rows[j] for j in keep]
            x = self.audio_embed(torch.tensor([[tokens[j]] for j in keep], device=device)) \
                + positions[audio_lens + step].unsqueeze(1)
            key_valid = F.pad(key_valid, (0, 1), value=True)
            allowed = None if key_valid.all() else key_valid[:, None, None, :]
            last = self._cached_pass(x, allowed, caches)[:, -1]
        return [(torch.tensor(codes, dtype=torch.long, device=device), stop) for codes, stop in zip(new, stopped)]

    def _cached_pass(self, x: torch.Tensor, allowed: torch.Tensor | None, caches: list[KVCache]) -> torch.Tensor:
        """x (B, L, D) new positions through every block, keys/values appended to `caches` -> (B, L, D)."""
        for block, cache in zip(self.blocks, caches):
            x = block(x, allowed, cache=cache)
        return x


def sample_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One id per row of (B, V) logits -> (B,); temperature 0 is greedy; top_k 0 and top_p 1 disable
    them. Draws on the generator's device (on the CPU without one)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(-1).to(generator.device if generator is not None else "cpu")
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)


class NARModel(nn.Module):
    """Codebooks 2..Q given text, the prompt's Q codebooks and the target's earlier codebooks."""

    def __init__(self, cfg: ModelConfig, num_text_tokens: int):
        super().__init__()
        self.cfg = cfg
        d, Q = cfg.d_model, cfg.num_codebooks
        self.text_embed = nn.Embedding(num_text_tokens, d, padding_idx=0)
        self.code_embeds = nn.ModuleList(nn.Embedding(cfg.codebook_size, d) for _ in range(Q))
        self.stage_embed = nn.Embedding(Q, d)  # index j - 1 for codebook j (index 0 unused)
        adaptive = cfg.nar_stage == "adaln"
        self.blocks = nn.ModuleList(Block(cfg, adaptive=adaptive) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.heads = nn.ModuleList(nn.Linear(d, cfg.codebook_size) for _ in range(Q - 1))

    def audio_input(self, codes: torch.Tensor, prompt_lens: torch.Tensor, stage: int) -> torch.Tensor:
        """codes (B, T, Q) -> (B, T, D): all Q embeddings summed on prompt frames, the first
        `stage` codebooks (0-based 1..Q-1 predicts codebook index `stage`) on target frames."""
        in_prompt = lengths_mask(prompt_lens, codes.shape[1])
        summed = sum(self.code_embeds[q](codes[..., q]) for q in range(stage))
        prompt_rest = sum(self.code_embeds[q](codes[..., q]) for q in range(stage, self.cfg.num_codebooks))
        return summed + prompt_rest * in_prompt.unsqueeze(-1)

    def forward(self, text: torch.Tensor, text_lens: torch.Tensor, codes: torch.Tensor,
                audio_lens: torch.Tensor, prompt_lens: torch.Tensor, stage: int) -> torch.Tensor:
        """Logits (B, T, K) for codebook index `stage` (1..Q-1) at every audio frame; only frames
        in [prompt_len, audio_len) are meaningful targets."""
        if not 1 <= stage < self.cfg.num_codebooks:
            raise ValueError(f"NAR stage must be in 1..{self.cfg.num_codebooks - 1}, got {stage}")
        B, T_text = text.shape
        T, d = codes.shape[1], self.cfg.d_model
        x = torch.cat([self.text_embed(text) + sinusoids(T_text, d, text.device),
                       self.audio_input(codes, prompt_lens, stage) + sinusoids(T, d, text.device)], dim=1)
        cond = self.stage_embed(torch.full((B,), stage, device=text.device))
        if self.cfg.nar_stage == "add":
            x = x + cond.unsqueeze(1)
        key_valid = torch.cat([lengths_mask(text_lens, T_text), lengths_mask(audio_lens, T)], dim=1)
        allowed = key_valid[:, None, None, :].expand(B, 1, T_text + T, T_text + T)
        for block in self.blocks:
            x = block(x, allowed, cond)
        return self.heads[stage - 1](self.norm(x[:, T_text:]))

    @torch.no_grad()
    def generate(self, text: torch.Tensor, prompt_codes: torch.Tensor, codes1: torch.Tensor) -> torch.Tensor:
        """Greedy. text (T_text,) prompt + target; prompt_codes (P, Q); codes1 (N,) -> (N, Q)."""
        return self.generate_batch([text], [prompt_codes], [codes1])[0]

    @torch.no_grad()
    def generate_batch(self, texts: list[torch.Tensor], prompt_codes: list[torch.Tensor],
                       codes1: list[torch.Tensor]) -> list[torch.Tensor]:
        """Greedy, B utterances at once (text and audio padded, as in training): texts[i] (T_text_i,)
        prompt + target; prompt_codes[i] (P_i, Q); codes1[i] (N_i,) -> codes (N_i, Q) per utterance."""
        device, Q = texts[0].device, self.cfg.num_codebooks
        text_lens = torch.tensor([len(t) for t in texts], device=device)
        prompt_lens = torch.tensor([len(p) for p in prompt_codes], device=device)
        audio_lens = prompt_lens + torch.tensor([len(c) for c in codes1], device=device)
        text = nn.utils.rnn.pad_sequence(texts, batch_first=True)
        codes = nn.utils.rnn.pad_sequence([torch.cat([p, F.pad(c[:, None], (0, Q - 1))])
                                           for p, c in zip(prompt_codes, codes1)], batch_first=True)
        is_target = target_frames(prompt_lens, audio_lens, codes.shape[1])
        for stage in range(1, Q):
            logits = self(text, text_lens, codes, audio_lens, prompt_lens, stage)
            codes[..., stage] = torch.where(is_target, logits.argmax(-1), codes[..., stage])
        return [codes[i, p:a] for i, (p, a) in enumerate(zip(prompt_lens.tolist(), audio_lens.tolist()))]


def target_frames(prompt_lens: torch.Tensor, audio_lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,), (B,) -> (B, max_len) bool, True at the frames the NAR predicts: after the prompt, before the end."""
    frames = torch.arange(max_len, device=prompt_lens.device)[None, :]
    return (frames >= prompt_lens[:, None]) & (frames < audio_lens[:, None])


class VALLE(nn.Module):
    """Both stages under one module (one optimizer, one checkpoint, one DDP wrapper)."""

    def __init__(self, cfg: ModelConfig, num_text_tokens: int):
        super().__init__()
        self.ar = ARModel(cfg, num_text_tokens)
        self.nar = NARModel(cfg, num_text_tokens)

    def forward(self, text, text_lens, codes, audio_lens, prompt_lens, stage: int, which: str = "both"):
        """codes (B, T, Q) -> {"ar": (logits (B, T+1, K+1), targets (B, T+1)),
        "nar": (logits (B, T, K), targets (B, T))}; targets are -100 where no loss applies."""
        out = {}
        if which in ("ar", "both"):
            audio_in, targets, in_lens = self.ar.inputs_and_targets(codes[..., 0], audio_lens)
            out["ar"] = (self.ar(text, text_lens, audio_in, in_lens), targets)
        if which in ("nar", "both"):
            logits = self.nar(text, text_lens, codes, audio_lens, prompt_lens, stage)
            is_target = target_frames(prompt_lens, audio_lens, codes.shape[1])
            out["nar"] = (logits, codes[..., stage].masked_fill(~is_target, -100))
        return out
