"""Model zoo: `build_model(cfg.model, n_mels, n_classes)`."""
from __future__ import annotations

from sed.models.cdur import CDur
from sed.models.crnn import CRNN, GatedConvBlock


def build_model(model_cfg, n_mels: int, n_classes: int):
    kwargs = dict(conv_channels=model_cfg.conv_channels, freq_pool=model_cfg.freq_pool,
                  time_pool=model_cfg.time_pool, rnn_hidden=model_cfg.rnn_hidden,
                  rnn_layers=model_cfg.rnn_layers, dropout=model_cfg.dropout, pooling=model_cfg.pooling)
    if len({len(model_cfg.conv_channels), len(model_cfg.freq_pool), len(model_cfg.time_pool)}) != 1:
        from common.config import ConfigError
        raise ConfigError("model.conv_channels, model.freq_pool and model.time_pool need the same length "
                          "(one entry per conv block)")
    if model_cfg.name == "cdur":
        if model_cfg.context_gating:
            from common.config import ConfigError
            raise ConfigError("model.context_gating gates the CRNN's conv blocks; use it with model.name=crnn")
        return CDur(n_mels, n_classes, **kwargs)
    return CRNN(n_mels, n_classes, **kwargs, **({"block": GatedConvBlock} if model_cfg.context_gating else {}))
