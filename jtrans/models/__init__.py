"""Models built from the shared blocks, chosen by `config.model.family`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jtrans.models.clip import CLIP
from jtrans.models.config import ModelConfig
from jtrans.models.decoder import DecoderLM
from jtrans.models.dit import DiT
from jtrans.models.encoder import EncoderMLM
from jtrans.models.encoder_decoder import EncoderDecoder
from jtrans.models.vit import ViT

MODELS: dict[str, type[nn.Module]] = {
  "decoder": DecoderLM,
  "encoder": EncoderMLM,
  "encoder_decoder": EncoderDecoder,
  "vit": ViT,
  "clip": CLIP,
  "dit": DiT,
}


def build_model(model: ml_collections.ConfigDict | ModelConfig) -> nn.Module:
  """The Linen module for `config.model` (validated: bad shapes fail here, naming the key)."""
  cfg = model if isinstance(model, ModelConfig) else ModelConfig.from_config(model)
  return MODELS[cfg.family](cfg)


def example_inputs(
  cfg: ModelConfig, length: int = 1, source_length: int = 0
) -> tuple[jax.Array, ...]:
  """Zero inputs of batch 1 that `build_model(cfg).init` traces to create the parameters
  (their shapes never depend on the lengths): tokens `[1, length]`, source tokens
  `[1, source_length or length]` for an encoder-decoder, an image for ViT (and a caption for
  CLIP, a timestep and a class for DiT)."""
  tokens = jnp.zeros((1, length), jnp.int32)
  image = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.num_channels), jnp.float32)
  if cfg.family == "vit":
    return (image,)
  if cfg.family == "clip":
    return (image, tokens)
  if cfg.family == "dit":  # Noised image, timestep, class.
    return (image, jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32))
  if cfg.family == "encoder_decoder":
    return (jnp.zeros((1, source_length or length), jnp.int32), tokens)
  return (tokens,)
