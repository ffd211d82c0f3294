"""Self-critical sequence training (Rennie et al. 2017): REINFORCE on whole sampled captions, with
CIDEr-D as the reward and a baseline that needs no learned critic.

For each training image, K captions are sampled token by token from the model's softmax; each
gets its CIDEr-D r against the image's references. The loss is

    - sum over sampled tokens of (r - b) * log p(token)   / number of sampled tokens

with the baseline b either the CIDEr-D of the model's own greedy caption of that image
(`greedy`, Rennie et al.) or the mean reward of the image's other K-1 samples (`mean`, Luo 2020).
Samples better than the baseline become more likely, worse ones less likely.

The sampling pass runs without gradients; a second, teacher-forced pass over the sampled tokens
(through the DDP wrapper, so gradients are synchronised) gives the log-probabilities. Both run with
the model in eval mode, so the policy that drew the samples is exactly the one differentiated
(no dropout mask in one pass that the other does not have).
"""
from __future__ import annotations

import math
from collections import Counter

import torch

from captioning.decoding import greedy_decode
from common.checkpoint import find_checkpoint, load_checkpoint
from common.config import ConfigError, resolve_path
from common.device import autocast


def load_cross_entropy_model(init_from: str, model, vocab) -> None:
    """SCST's starting point: the weights of train.init_from (a run folder: its best.pt; or a checkpoint)."""
    if not init_from:
        raise ConfigError("train.method=scst starts from a cross-entropy model: set train.init_from="
                          "runs/captioning/<run> (its best.pt is used) or a checkpoint file")
    _, path = find_checkpoint(resolve_path(init_from), "captioning")
    state = load_checkpoint(path)
    if state["vocab"] != vocab.to_json():
        raise ConfigError(f"train.init_from: {path} has another vocabulary ({len(state['vocab'])} words, this run "
                          f"{len(vocab)}); use the data.* settings of the run it comes from")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise ConfigError(f"train.init_from: {path} holds another architecture ({detail}); use the encoder.* "
                          f"and decoder.* settings of the run it comes from") from None
    print(f"scst: starting from {path} (epoch {state['epoch']}, step {state['step']})")


class CiderD:
    """CIDEr-D as pycocoevalcap's Cider computes it (tf-idf vectors of 1- to 4-grams, clipped
    cosine against each reference, Gaussian length penalty with sigma 6, mean over n and over
    references, times 10), but with the document frequencies fixed from a reference corpus (the
    training references, as in SCST) and every reference's vector computed once, so that scoring
    a batch of samples only cooks the samples.

    corpus_references[i]: the tokenised references (space-joined words) of image i."""

    def __init__(self, corpus_references: list[list[str]], n: int = 4, sigma: float = 6.0):
        # pycocoevalcap's own n-gram counting; imported here, not at training start-up (it is only
        # needed by SCST)
        from pycocoevalcap.cider.cider_scorer import precook
        self.precook = precook
        self.n, self.sigma = n, sigma
        cooked = [[precook(ref, n) for ref in refs] for refs in corpus_references]
        document_frequency = Counter(ngram for refs in cooked for ngram in {g for ref in refs for g in ref})
        self.log_df = {ngram: math.log(count) for ngram, count in document_frequency.items()}
        self.log_images = math.log(len(corpus_references))
        self.references = [[self._vector(ref) for ref in refs] for refs in cooked]

    def _vector(self, counts: dict) -> tuple[list[dict], list[float], int]:
        """n-gram counts -> (tf-idf weights per n, their norms per n, length)."""
        vector = [{} for _ in range(self.n)]
        norms = [0.0] * self.n
        length = 0
        for ngram, term_freq in counts.items():
            order = len(ngram) - 1
            weight = term_freq * (self.log_images - self.log_df.get(ngram, 0.0))  # unseen n-gram: df 1
            vector[order][ngram] = weight
            norms[order] += weight * weight
            if order == 1:  # pycocoevalcap counts bigrams as the length (words - 1); kept for equal scores
                length += term_freq
        return vector, [math.sqrt(x) for x in norms], length

    def score(self, image: int, caption: str) -> float:
        """CIDEr-D of one caption (space-joined words) against the references of corpus image `image`."""
        vector, norms, length = self._vector(self.precook(caption, self.n))
        total = 0.0
        for ref_vector, ref_norms, ref_length in self.references[image]:
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for order in range(self.n):
                ref_weights = ref_vector[order]
                overlap = sum(min(w, ref_weights.get(g, 0.0)) * ref_weights.get(g, 0.0)
                              for g, w in vector[order].items())
                if norms[order] != 0 and ref_norms[order] != 0:
                    overlap /= norms[order] * ref_norms[order]
                total += overlap * penalty
        return 10.0 * total / (self.n * len(self.references[image]))

    def score_batch(self, images: list[int], captions: list[str]) -> torch.Tensor:
        """(N,) CIDEr-D of captions[i] against the references of images[i]; a caption sampled twice
        for the same image is scored once."""
        seen: dict[tuple[int, str], float] = {}
        for key in zip(images, captions):
            if key not in seen:
                seen[key] = self.score(*key)
        return torch.tensor([seen[key] for key in zip(images, captions)], dtype=torch.float64)


@torch.no_grad()
def sample_captions(decoder, features: torch.Tensor, samples_per_image: int, start_id: int, end_id: int,
                    pad_id: int, max_len: int, banned_ids: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """features (B, P, D) -> tokens (B*K, L) drawn from the softmax at every step (torch's global RNG,
    which checkpoints hold), the K samples of an image in adjacent rows, <pad> after <end>; and
    lengths (B*K,) counting <end>. `banned_ids` are never drawn; a sample stops at max_len tokens."""
    memory = decoder.prepare_memory(features)
    state = {k: v.repeat_interleave(samples_per_image, dim=0) for k, v in decoder.init_state(memory).items()}
    rows = features.size(0) * samples_per_image
    tokens = torch.full((rows,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=features.device)
    lengths = torch.zeros(rows, dtype=torch.long, device=features.device)
    generated = []
    for _ in range(max_len):
        logits, state, _ = decoder.step(tokens, state, memory)
        logits = logits.float()
        logits[:, list(banned_ids)] = float("-inf")
        tokens = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1).masked_fill(finished, pad_id)
        generated.append(tokens)
        lengths += (~finished).long()
        finished = finished | (tokens == end_id)
        if bool(finished.all()):
            break
    return torch.stack(generated, dim=1), lengths


def baselines(rewards: torch.Tensor, greedy_rewards: torch.Tensor | None) -> torch.Tensor:
    """rewards (B, K) of the K samples of each image -> baseline (B, K) of each sample: the greedy
    caption's reward (B,) when given, else the mean reward of the image's other K-1 samples."""
    if greedy_rewards is not None:
        return greedy_rewards.unsqueeze(1).expand_as(rewards)
    k = rewards.size(1)
    return (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)


def policy_gradient_loss(token_log_probs: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """token_log_probs (N, L) of the sampled tokens, mask (N, L) true up to and including <end>,
    advantages (N,) = reward - baseline -> - mean over sampled tokens of advantage * log p."""
    # masked first: a <pad> after <end> has log-probability -inf (it is banned), and -inf * 0 is nan
    log_probs = token_log_probs.masked_fill(~mask, 0.0)
    return -(advantages.unsqueeze(1) * log_probs).sum() / mask.sum().clamp(min=1)


def self_critical_loss(model, train_model, inputs, image_index: torch.Tensor, cider: CiderD, vocab, train_cfg,
                       features_given: bool, device, dtype):
    """One SCST batch: inputs (B, ...) images or features of training images `image_index` (B,)
    -> (loss, mean sample reward, mean baseline) as 0-dim tensors on the device."""
    model.eval()  # see the module docstring: no dropout in either pass
    k = train_cfg.scst_samples
    banned = (vocab.start, vocab.pad)
    special = dict(start_id=vocab.start, end_id=vocab.end, pad_id=vocab.pad, max_len=train_cfg.scst_max_len,
                   banned_ids=banned)
    with torch.no_grad(), autocast(device, dtype):
        features = inputs if features_given else model.encode(inputs)
        sampled, lengths = sample_captions(model.decoder, features, k, **special)
        greedy = greedy_decode(model.decoder, features, **special) if train_cfg.scst_baseline == "greedy" else None
    images = image_index.tolist()
    rewards = cider.score_batch([i for i in images for _ in range(k)],
                                [vocab.decode(t) for t in sampled.cpu()]).view(len(images), k)
    greedy_rewards = cider.score_batch(images, [vocab.decode(t) for t in greedy.tokens.cpu()]) \
        if greedy is not None else None
    baseline = baselines(rewards, greedy_rewards)
    advantages = (rewards - baseline).view(-1).to(device=device, dtype=torch.float32)

    # Teacher-forced pass over the samples: <start> then every sampled token but the last.
    caption_inputs = torch.cat([torch.full_like(sampled[:, :1], vocab.start), sampled[:, :-1]], dim=1)
    with autocast(device, dtype):
        logits, _ = train_model(inputs, caption_inputs, features_given=features_given)
    banned_mask = torch.zeros(logits.size(2), dtype=torch.bool, device=device)
    banned_mask[list(banned)] = True
    logits = logits.float().masked_fill(banned_mask, float("-inf"))  # the distribution the samples came from
    token_log_probs = torch.log_softmax(logits, dim=-1).gather(2, sampled.unsqueeze(2)).squeeze(2)
    mask = torch.arange(sampled.size(1), device=device).unsqueeze(0) < lengths.unsqueeze(1)
    loss = policy_gradient_loss(token_log_probs, mask, advantages)
    return loss, rewards.mean().to(device, torch.float32), baseline.mean().to(device, torch.float32)
