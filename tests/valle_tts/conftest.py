"""Shared fixtures: a tiny generated corpus prepared once (manifests + random-weight EnCodec codes)
and a tiny trained run. Audio is kept very short because EnCodec is slow on CPU."""
from __future__ import annotations

import pytest

TINY_PARTS = {"train-clean-100": (2, 3, 100), "dev-clean": (2, 1, 100), "test-clean": (1, 2, 900)}


def write_config(path, root, **sections) -> str:
    """A tiny config file for the prepared corpus under `root`; `sections` override keys."""
    import yaml
    cfg = {"data": {"corpus": "libritts", "corpus_dir": str(root / "corpus"),
                    "manifest_dir": str(root / "manifests"), "min_duration_s": 0.3, "max_duration_s": 5.0,
                    "max_batch_s": 2.0, "num_buckets": 2, "num_workers": 0},
           "codec": {"pretrained": False, "batch_seconds": 10.0},
           "model": {"d_model": 32, "num_layers": 1, "num_heads": 2, "dropout": 0.1},
           "train": {"epochs": 2, "lr": 1e-3, "warmup_steps": 2, "log_every_steps": 1},
           "synth": {"prompt_s": 0.3, "max_frames_per_token": 2, "top_k": 5},
           "eval": {"min_duration_s": 0.3, "max_duration_s": 5.0, "random_scorers": True,
                    "asr_max_tokens": 4, "max_utterances": 1},
           "run": {"root": str(root / "runs"), "name": "tiny"}}
    for section, values in sections.items():
        cfg[section].update(values)
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def make_config():
    """write_config, for tests that need a variant of the tiny config."""
    return write_config


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """(root folder, config path) with every prepare stage done."""
    from common.config import load_config
    from valle_tts.config import Config
    from valle_tts.prepare import run_stages
    from valle_tts.synth_corpus import write_corpus
    root = tmp_path_factory.mktemp("valle")
    write_corpus(root / "corpus", parts=TINY_PARTS, words_per_utt=(1, 1))
    config = write_config(root / "tiny.yaml", root)
    cfg = load_config(Config, config)
    run_stages(cfg.data, cfg.codec, "cpu")
    return root, config


@pytest.fixture(scope="session")
def trained_run(prepared):
    """A finished tiny training run (run folder)."""
    from valle_tts.train import main
    root, config = prepared
    return main(["--config", config, "run.name=trained"])
