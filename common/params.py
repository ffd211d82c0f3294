"""Parameter counting and the per-project budget (LM 60M, VALL-E 500M)."""
from __future__ import annotations

import torch.nn as nn

from common.config import ConfigError


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied weights counted once), trainable or not."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def check_parameter_budget(model: nn.Module, limit: int, what: str = "model") -> int:
    """Print the count; raise ConfigError (one line) when it exceeds `limit`."""
    n = count_parameters(model)
    print(f"{what}: {n:,} parameters (limit {limit:,})")
    if n > limit:
        raise ConfigError(f"{what} has {n:,} parameters, over the {limit:,} limit by {n - limit:,}; "
                          f"make the model smaller in the config (model.* keys)")
    return n
