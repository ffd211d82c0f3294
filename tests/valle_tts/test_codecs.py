"""The second codec (codec.name=vocos: EnCodec's tokens, Vocos's decoder) with random weights, its
offline error, and codes of one codec never read as another's."""
from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from common.config import ConfigError, load_config
from valle_tts.codec import CodecConfig, build_codec, codec_tokens


def test_vocos_decodes_encodec_tokens():
    encodec = build_codec(CodecConfig(name="encodec", pretrained=False))
    vocos = build_codec(CodecConfig(name="vocos", pretrained=False))
    assert (vocos.sample_rate, vocos.frame_rate_hz, vocos.num_codebooks, vocos.codebook_size) == (24000, 75.0, 8, 1024)
    t = torch.arange(4800) / 24000
    wave = (0.3 * torch.sin(2 * torch.pi * 220 * t))[None]
    codes = vocos.encode(wave, torch.tensor([4800]))[0]
    assert torch.equal(codes, encodec.encode(wave, torch.tensor([4800]))[0])  # the same tokens
    assert codes.shape == (8, 15)
    decoded = vocos.decode(codes[None])
    assert decoded.shape == (1, 15 * 320) and decoded.dtype == torch.float32 and torch.isfinite(decoded).all()
    assert not torch.allclose(decoded, encodec.decode(codes[None])[:, :decoded.shape[1]])  # another decoder
    assert codec_tokens("vocos") == codec_tokens("encodec") == "encodec"


def test_vocos_offline_and_unknown_codec_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.time()
    with pytest.raises(ConfigError, match=r"Vocos weights \(pytorch_model.bin of charactr/vocos-encodec-24khz\) "
                                          r"are not in the Hugging Face cache .* huggingface-cli download "
                                          r"charactr/vocos-encodec-24khz"):
        build_codec(CodecConfig(name="vocos", pretrained=True, bandwidth_kbps=3.0))
    assert time.time() - start < 10
    with pytest.raises(ConfigError, match="codec.name='dac' is not known; use encodec or vocos"):
        build_codec(CodecConfig(name="dac"))
    with pytest.raises(ConfigError, match="codec.bandwidth_kbps=24.0: Vocos is trained for 1.5, 3.0, 6.0, 12.0"):
        build_codec(CodecConfig(name="vocos", pretrained=False, bandwidth_kbps=24.0))


def test_codes_of_another_codec_are_refused(prepared, trained_run, tmp_path, capsys):
    from valle_tts import evaluate
    from valle_tts.config import Config
    from valle_tts.prepare import check_settings
    root, config = prepared
    cfg = load_config(Config, config)
    # Vocos reads EnCodec's tokens: a folder of EnCodec codes is its own
    check_settings(cfg.data, CodecConfig(name="vocos", pretrained=False, batch_seconds=10.0), root / "manifests")
    other = tmp_path / "manifests"
    shutil.copytree(root / "manifests", other)
    (other / "codec.json").write_text(json.dumps({"name": "dac", "bandwidth_kbps": 6.0, "pretrained": False}))
    with pytest.raises(SystemExit):
        evaluate.main([str(trained_run), f"data.manifest_dir={other}", "codec.name=vocos"])
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"the codes in {other} were made by codec dac; codec.name=vocos reads encodec codes" in err


def test_evaluation_with_the_vocos_decoder(trained_run, tmp_path):
    """The same model and stored codes, decoded by Vocos: the codec switch of the course's codec A vs B."""
    from valle_tts import evaluate
    run = tmp_path / "trained_vocos"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval", "summary.json"))
    evaluate.main([str(run), "codec.name=vocos"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["codec"] == "vocos" and summary["language"] == "en"
    assert isinstance(summary["metrics"]["wer_codec_resynthesis"], float)
    assert json.loads((run / "eval" / "settings.json").read_text())["codec.name"] == "vocos"


def test_pretrained_vocos_loads_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """The loading path, with a checkpoint written in the cache's layout from the random Vocos (the
    real one cannot be fetched here) and the random EnCodec standing in for the pretrained one."""
    import yaml

    from valle_tts import codec as codec_module
    random_vocos = build_codec(CodecConfig(name="vocos", pretrained=False))
    snapshot = tmp_path / "hub" / "models--charactr--vocos-encodec-24khz" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    layers = random_vocos.encodec.model.quantizer.vq.layers[:16]  # as Vocos stores them: 16 books (12 kbps)
    state = {"feature_extractor.codebook_weights": torch.cat([layer.codebook for layer in layers])}
    state |= {f"backbone.{k}": v for k, v in random_vocos.backbone.state_dict().items()}
    state |= {f"head.{k}": v for k, v in random_vocos.head.state_dict().items()}
    torch.save(state, snapshot / "pytorch_model.bin")
    (snapshot / "config.yaml").write_text(yaml.safe_dump({
        "backbone": {"class_path": "vocos.models.VocosBackbone", "init_args": {
            "input_channels": 128, "dim": 384, "intermediate_dim": 1152, "num_layers": 8, "adanorm_num_embeddings": 4}},
        "head": {"class_path": "vocos.heads.ISTFTHead", "init_args": {
            "dim": 384, "n_fft": 1280, "hop_length": 320, "padding": "same"}}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(codec_module, "EncodecCodec", lambda pretrained, *args: random_vocos.encodec)
    loaded = codec_module.VocosCodec(pretrained=True, bandwidth_kbps=6.0)
    codes = torch.randint(0, 1024, (1, 8, 20))
    assert torch.allclose(loaded.decode(codes), random_vocos.decode(codes), atol=1e-5)
