"""The config schema of lm/ (every key of every configs/*.yaml, with its default and meaning)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from common.config import RunConfig, bounded


@dataclasses.dataclass
class DataConfig:
    dir: str = "data/lm/gigaspeech"                # train.txt valid.txt test.txt (or ptb.train.txt ...)
    vocab_from: Literal["train", "all"] = "train"  # "all": the course convention (vocab over 3 files)
    max_vocab: int = bounded(0, ge=0)              # keep the N most frequent words (0: all)
    min_count: int = bounded(1, ge=0)              # drop words seen fewer times (they become <unk>)
    empty_lines: Literal["skip", "eos"] = "skip"   # "eos": an <eos> per empty line (WikiText's published PPLs)
    generate: Literal["", "markov"] = ""           # "markov": write a synthetic corpus into dir if absent
    generate_train_tokens: int = bounded(100_000, ge=1)


@dataclasses.dataclass
class ModelConfig:
    arch: Literal["ffnn", "rnn_tanh", "rnn_relu", "gru", "lstm", "transformer"] = "lstm"
    emb_dim: int = bounded(400, ge=1)                  # embedding size (= d_model for the Transformer)
    hidden: int = bounded(1150, ge=1)                  # RNN hidden size / FFNN hidden layer size
    layers: int = bounded(3, ge=1)
    tie_weights: bool = True                           # output layer shares the embedding matrix
    dropout: float = bounded(0.4, ge=0, lt=1)          # RNN: locked dropout on the output; FFNN/Transformer: dropout
    dropout_emb: float = bounded(0.1, ge=0, lt=1)      # drop whole words from the embedding matrix
    dropout_input: float = bounded(0.4, ge=0, lt=1)    # RNN: locked dropout on the embeddings
    dropout_hidden: float = bounded(0.25, ge=0, lt=1)  # RNN: locked dropout between layers
    weight_drop: float = bounded(0.5, ge=0, lt=1)      # RNN: DropConnect on hidden-to-hidden weights
    context_size: int = bounded(4, ge=1)               # FFNN: previous words seen (an (n+1)-gram model)
    heads: int = bounded(8, ge=1)                      # Transformer
    ff_dim: int = bounded(2048, ge=1)                  # Transformer MLP width
    attn_dropout: float = bounded(0.1, ge=0, lt=1)     # Transformer: dropout on attention weights
    positions: Literal["sinusoidal", "learned", "rotary"] = "rotary"
    max_len: int = bounded(512, ge=1)                  # learned/sinusoidal table size (window + memory)
    memory_len: int = bounded(0, ge=0)                 # Transformer: tokens of the previous chunk kept as context


@dataclasses.dataclass
class TrainConfig:
    epochs: int = bounded(40, ge=1)
    max_minutes: float = bounded(0.0, ge=0)                 # stop after this much training time (0: no limit)
    batch_size: int = bounded(20, ge=1)                     # parallel streams (rows) of the training text
    bptt: int = bounded(70, ge=1)                           # tokens per chunk (Transformer: window length)
    variable_bptt: bool = False                             # AWD-LSTM's random chunk lengths around bptt
    optimizer: Literal["sgd", "ntasgd", "adam", "adamw"] = "sgd"
    lr: float = bounded(20.0, gt=0)
    momentum: float = bounded(0.0, ge=0, lt=1)              # SGD
    betas: list[float] = bounded([0.9, 0.999], ge=0, lt=1)  # adam / adamw
    weight_decay: float = bounded(0.0, ge=0)
    nonmono: int = bounded(5, ge=1)  # NT-ASGD: start averaging when valid has not improved for N epochs
    schedule: Literal["none", "plateau", "cosine", "inverse_sqrt"] = "plateau"
    warmup_steps: int = bounded(0, ge=0)                    # cosine / inverse_sqrt: linear warmup
    plateau_factor: float = bounded(0.25, gt=0, lt=1)       # plateau: lr *= factor when valid ppl does not improve
    plateau_patience: int = bounded(0, ge=0)
    min_lr: float = bounded(0.0, ge=0)
    clip: float = bounded(0.25, ge=0)                       # gradient norm clipping (0: off)
    early_stop_patience: int = bounded(0, ge=0)             # stop when valid has not improved for N epochs (0: off)
    eval_batch_size: int = bounded(10, ge=1)                # streams evaluated in parallel (1: one pass over the text)
    log_every_steps: int = bounded(100, ge=0)               # train loss to tensorboard every N steps (0: never)


@dataclasses.dataclass
class EvalConfig:
    context: int = bounded(0, ge=0)            # Transformer: tokens of context per window (0: train.bptt)
    stride: int = bounded(0, ge=0)             # Transformer: new tokens scored per window (0: context / 2)
    generate_tokens: int = bounded(100, ge=0)  # evaluate.py writes a sample of this many words
    temperature: float = bounded(1.0, ge=0)    # 0: the most likely word
    top_k: int = bounded(0, ge=0)              # sample among the k most likely words (0: all)
    prompt: str = ""                           # words to start the sample from ("" : start of a sentence)


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
