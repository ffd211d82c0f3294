"""A generated corpus whose best possible perplexity is known: a second-order Markov chain over a
small word vocabulary, `<eos>` included as a word so the stream splits into sentences.

Each context (previous two words) has a few possible next words with Dirichlet-drawn
probabilities. The entropy rate H = sum over contexts pi(a, b) * H(next | a, b) (pi the stationary
distribution of the pair chain) gives the perplexity no model can beat on average, exp(H); the
oracle perplexity of a particular test file (the true model's exp(mean NLL) on it) is printed too.

    python -m lm.synthetic --out runs/lm/data/markov    # writes train/valid/test.txt + source.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from lm.data import EOS

SOURCE_FILE = "source.json"


def make_words(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct pronounceable pseudo-words."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words: set[str] = set()
    while len(words) < n:
        syllables = rng.integers(1, 4)
        words.add("".join(rng.choice(list(consonants)) + rng.choice(list(vowels)) for _ in range(syllables)))
    return sorted(words)


class MarkovSource:
    """Second-order chain over `words` (index 0 is `<eos>`); `next_probs[a, b]` is the distribution
    of the word after (a, b), with `branching` non-zero entries."""

    def __init__(self, vocab_size: int = 24, branching: int = 4, concentration: float = 0.7,
                 eos_prob: float = 0.08, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.words = [EOS] + make_words(vocab_size - 1, rng)
        v = vocab_size
        self.next_probs = np.zeros((v, v, v))
        for a in range(v):
            for b in range(v):
                successors = rng.choice(np.arange(1, v), size=branching, replace=False)
                # sentences end at a fixed rate, never right after a sentence end (no empty lines)
                end = 0.0 if b == 0 else eos_prob
                self.next_probs[a, b, successors] = rng.dirichlet(np.full(branching, concentration)) * (1 - end)
                self.next_probs[a, b, 0] = end

    def entropy_rate_nats(self) -> float:
        """Stationary entropy of the pair chain (power iteration on pair probabilities)."""
        v = len(self.words)
        pair = np.full((v, v), 1.0 / v**2)
        for _ in range(500):
            new = np.einsum("ab,abc->bc", pair, self.next_probs)
            if np.abs(new - pair).max() < 1e-13:
                break
            pair = new
        p = self.next_probs
        cond_entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=2)
        return float(np.sum(pair * cond_entropy))

    def sample(self, num_tokens: int, rng: np.random.Generator) -> list[int]:
        """A stream that starts after a sentence end (context (<eos>, <eos>))."""
        out, a, b = [], 0, 0
        cumulative = np.cumsum(self.next_probs, axis=2)
        for u in rng.random(num_tokens):
            c = int(np.searchsorted(cumulative[a, b], u * cumulative[a, b, -1]))
            out.append(c)
            a, b = b, c
        return out

    def nll_nats(self, ids: list[int]) -> float:
        """Mean negative log-likelihood of a stream under the true model (context starts at <eos>)."""
        a, b, total = 0, 0, 0.0
        for c in ids:
            total -= math.log(self.next_probs[a, b, c])
            a, b = b, c
        return total / len(ids)


def to_lines(ids: list[int], words: list[str]) -> str:
    """Token ids -> text with one sentence per line (the `<eos>` ids become line breaks).
    A stream cut mid-sentence is cut at its last `<eos>`."""
    text = " ".join(words[i] for i in ids)
    sentences = [s.strip() for s in text.split(EOS)][:-1]
    return "\n".join(sentences) + "\n"


def write_corpus(out: str | Path, train_tokens: int = 100_000, eval_tokens: int = 10_000,
                 vocab_size: int = 24, branching: int = 4, seed: int = 0) -> dict:
    """Write train/valid/test.txt and source.json (entropy rate, oracle test perplexity)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = MarkovSource(vocab_size, branching, seed=seed)
    rng = np.random.default_rng(seed + 1)
    info = {"source": f"second-order Markov chain, {vocab_size} words (with <eos>), "
                      f"{branching} successors per context", "seed": seed}
    for split, n in (("train", train_tokens), ("valid", eval_tokens), ("test", eval_tokens)):
        text = to_lines(source.sample(n, rng), source.words)
        (out / f"{split}.txt").write_text(text)
        ids = [source.words.index(w) if w != EOS else 0
               for line in text.splitlines() for w in [*line.split(), EOS]]
        info[f"oracle_{split}_ppl"] = math.exp(source.nll_nats(ids))
    info["entropy_rate_nats"] = source.entropy_rate_nats()
    info["optimal_ppl"] = math.exp(info["entropy_rate_nats"])
    (out / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_source_info(data_dir: str | Path) -> dict | None:
    """source.json of a generated corpus, None for a real one."""
    path = Path(data_dir) / SOURCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-tokens", type=int, default=100_000)
    parser.add_argument("--vocab-size", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = write_corpus(args.out, args.train_tokens, vocab_size=args.vocab_size, seed=args.seed)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
