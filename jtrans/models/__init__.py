"""Models built from the shared blocks, chosen by `config.model.family`."""
from __future__ import annotations

import flax.linen as nn
import ml_collections

from jtrans.models.config import ModelConfig
from jtrans.models.decoder import DecoderLM


def build_model(model: ml_collections.ConfigDict | ModelConfig) -> nn.Module:
  """The Linen module for `config.model` (validated: bad shapes fail here, naming the key)."""
  cfg = model if isinstance(model, ModelConfig) else ModelConfig.from_config(model)
  if cfg.family == "decoder":
    return DecoderLM(cfg)
  raise ValueError(f"config.model.family={cfg.family!r} has no model.")
