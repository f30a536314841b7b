"""Models built from the shared blocks, chosen by `config.model.family`."""
from __future__ import annotations

import flax.linen as nn
import ml_collections

from jtrans.models.config import ModelConfig
from jtrans.models.decoder import DecoderLM
from jtrans.models.encoder import EncoderMLM
from jtrans.models.encoder_decoder import EncoderDecoder
from jtrans.models.vit import ViT

MODELS: dict[str, type[nn.Module]] = {
    "decoder": DecoderLM, "encoder": EncoderMLM, "encoder_decoder": EncoderDecoder, "vit": ViT}


def build_model(model: ml_collections.ConfigDict | ModelConfig) -> nn.Module:
  """The Linen module for `config.model` (validated: bad shapes fail here, naming the key)."""
  cfg = model if isinstance(model, ModelConfig) else ModelConfig.from_config(model)
  return MODELS[cfg.family](cfg)
