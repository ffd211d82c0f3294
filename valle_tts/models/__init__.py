from valle_tts.models.valle import VALLE, ARModel, ModelConfig, NARModel  # noqa: F401
