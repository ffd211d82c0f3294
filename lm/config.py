"""The config schema of lm/ (every key of every configs/*.yaml, with its default and meaning)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from common.config import RunConfig


@dataclasses.dataclass
class DataConfig:
    dir: str = "data/lm/gigaspeech"      # train.txt valid.txt test.txt (or ptb.train.txt ...)
    vocab_from: Literal["train", "all"] = "train"  # "all": the course convention (vocab over 3 files)
    max_vocab: int = 0                   # keep the N most frequent words (0: all)
    min_count: int = 1                   # drop words seen fewer times (they become <unk>)
    generate: Literal["", "markov"] = ""  # "markov": write a synthetic corpus into dir if absent
    generate_train_tokens: int = 100_000


@dataclasses.dataclass
class ModelConfig:
    arch: Literal["ffnn", "rnn_tanh", "rnn_relu", "gru", "lstm", "transformer"] = "lstm"
    emb_dim: int = 400                   # embedding size (= d_model for the Transformer)
    hidden: int = 1150                   # RNN hidden size / FFNN hidden layer size
    layers: int = 3
    tie_weights: bool = True             # output layer shares the embedding matrix
    dropout: float = 0.4                 # RNN: locked dropout on the output; FFNN/Transformer: dropout
    dropout_emb: float = 0.1             # drop whole words from the embedding matrix
    dropout_input: float = 0.4           # RNN: locked dropout on the embeddings
    dropout_hidden: float = 0.25         # RNN: locked dropout between layers
    weight_drop: float = 0.5             # RNN: DropConnect on hidden-to-hidden weights
    context_size: int = 4                # FFNN: previous words seen (an (n+1)-gram model)
    heads: int = 8                       # Transformer
    ff_dim: int = 2048                   # Transformer MLP width
    attn_dropout: float = 0.1            # Transformer: dropout on attention weights
    positions: Literal["sinusoidal", "learned", "rotary"] = "rotary"
    max_len: int = 512                   # learned/sinusoidal table size (window + memory)
    memory_len: int = 0                  # Transformer: tokens of the previous chunk kept as context


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 40
    max_minutes: float = 0.0             # stop after this much training time (0: no limit)
    batch_size: int = 20                 # parallel streams (rows) of the training text
    bptt: int = 70                       # tokens per chunk (Transformer: window length)
    variable_bptt: bool = False          # AWD-LSTM's random chunk lengths around bptt
    optimizer: Literal["sgd", "ntasgd", "adam", "adamw"] = "sgd"
    lr: float = 20.0
    momentum: float = 0.0                # SGD
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    nonmono: int = 5                     # NT-ASGD: start averaging when valid has not improved for N epochs
    schedule: Literal["none", "plateau", "cosine", "inverse_sqrt"] = "plateau"
    warmup_steps: int = 0                # cosine / inverse_sqrt: linear warmup
    plateau_factor: float = 0.25         # plateau: lr *= factor when valid ppl does not improve
    plateau_patience: int = 0
    min_lr: float = 0.0
    clip: float = 0.25                   # gradient norm clipping (0: off)
    early_stop_patience: int = 0         # stop when valid has not improved for N epochs (0: off)
    eval_batch_size: int = 10            # streams evaluated in parallel (1: one pass over the text)
    log_every_steps: int = 100           # train loss to tensorboard every N steps


@dataclasses.dataclass
class EvalConfig:
    context: int = 0                     # Transformer: tokens of context per window (0: train.bptt)
    stride: int = 0                      # Transformer: new tokens scored per window (0: context / 2)
    generate_tokens: int = 100           # evaluate.py writes a sample of this many words
    temperature: float = 1.0
    top_k: int = 0                       # sample among the k most likely words (0: all)
    prompt: str = ""                     # words to start the sample from ("" : start of a sentence)


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
