"""Encoder-decoder Transformer. The original one (post-LN, sinusoidal positions, embeddings
shared by source, target and output and scaled by sqrt(d_model)) and T5 (pre-RMSNorm, bucketed
relative position bias, gated GELU) are options of this one module."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtrans import masks
from jtrans.models import layers
from jtrans.models.config import ModelConfig


class EncoderDecoder(nn.Module):
  """Source tokens `[batch, source_length]` and decoder inputs `[batch, length]` (the targets
  shifted right after a start token) -> logits `[batch, length, vocab]` (float32)."""

  cfg: ModelConfig

  def setup(self):
    self.embed = layers.Embed(self.cfg)  # Shared by source, target and output.
    self.logits = layers.Logits(self.cfg)

  def project(self, hidden: jax.Array) -> jax.Array:
    """Decoder output `[batch, length, embed]` -> float32 logits `[batch, length, vocab]` (the
    chunked loss calls it a chunk of positions at a time)."""
    return self.logits(hidden, self.embed)

  @nn.compact
  def __call__(
    self,
    encoder_inputs: jax.Array | None,
    inputs: jax.Array | None,
    *,
    encoder_mask: jax.Array | None = None,
    encoded: jax.Array | None = None,
    positions: jax.Array | None = None,
    deterministic: bool = True,
    decode: bool = False,
    hidden: bool = False,
  ) -> jax.Array:
    """Args:
    encoder_inputs: int `[batch, source_length]`; may be None when `encoded` is given, or
      when decoding after the first step (the cross-attention keys and values are cached).
    inputs: int `[batch, length]` decoder inputs; None returns the encoder output
      `[batch, source_length, embed]` instead of logits.
    encoder_mask: `[batch, source_length]`, 1 on real source tokens; None: all real.
    encoded: an encoder output computed before (skips the encoder).
    positions: int `[batch, length]` decoder positions (when decoding: the cache index).
    decode: use and extend the decoder's KV cache (created by `init` with decode=True).
    hidden: return the decoder output `[batch, length, embed]` for `project` instead.
    """
    cfg = self.cfg
    embed = self.embed
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
    source_valid = None if encoder_mask is None else encoder_mask.astype(jnp.int32)
    cross_mask = masks.MaskSpec(kv_segments=source_valid)
    if encoded is None and encoder_inputs is not None:
      source_positions = layers.default_positions(encoder_inputs, None)
      x = dropout(embed(encoder_inputs, source_positions))
      self_mask = masks.MaskSpec(source_valid, source_valid, **layers.pattern(cfg, False))
      encoded = layers.Stack(cfg, cfg.encoder_layers, deterministic=deterministic, name="encoder")(
        x, layers.BlockInputs(mask=self_mask, positions=source_positions)
      )
    if inputs is None:
      return encoded

    positions = layers.default_positions(inputs, positions, decode and not self.is_initializing())
    y = dropout(embed(inputs, positions))
    self_mask = (
      None
      if decode and not self.is_initializing()
      else masks.MaskSpec(**layers.pattern(cfg, causal=True))
    )
    y = layers.Stack(
      cfg,
      cfg.num_layers,
      causal=True,
      cross=True,
      deterministic=deterministic,
      decode=decode,
      name="decoder",
    )(
      y,
      layers.BlockInputs(
        mask=self_mask, positions=positions, context=encoded, context_mask=cross_mask
      ),
    )
    return y if hidden else self.project(y)

  def encode(self, encoder_inputs: jax.Array, encoder_mask: jax.Array | None = None) -> jax.Array:
    """`[batch, source_length]` -> encoder output `[batch, source_length, embed]`."""
    return self(encoder_inputs, None, encoder_mask=encoder_mask)
